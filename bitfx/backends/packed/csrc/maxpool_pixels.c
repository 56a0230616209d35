/* The fused stem's max pool over pixel-major rows (stem.c, with bitfx_fconv_job.stage_pixels): each
 * pixel's 64 channels are 4 vectors, so a pool output pixel is a few vector maxima written straight
 * to its channels-last place, with no transposes. The comparisons are those of the portable pool
 * (bitfx_fmaxpool_row_portable, rows up to 1024 wide): per kernel column, its first valid row, then
 * max(row, so far) down the rows; the output starts at −∞ and takes max(output, column) column by
 * column. So the outputs are the same bits, zeros' signs and NaN included. Compiled for AVX-512 (F);
 * stem.c only calls it when the row function is an AVX-512 one. */
#if defined(__x86_64__)
#pragma GCC target("avx512f")
#include <immintrin.h>

#include "internal.h"

void bitfx_maxpool_pixels_avx512(const bitfx_fmaxpool_desc *p, const float *rows, float *out, int64_t out_stride, int64_t channels) {
    __mmask16 masks[4];
    for (int v = 0; v < 4; ++v) {
        const int64_t left = channels - 16 * v;
        masks[v] = left >= 16 ? 0xffff : left > 0 ? (__mmask16)((1u << left) - 1) : 0;
    }
    for (int64_t r = 0; r < p->out_h; ++r) {
        for (int64_t ow = 0; ow < p->out_w; ++ow) {
            __m512 best[4];
            for (int v = 0; v < 4; ++v) best[v] = _mm512_set1_ps(-__builtin_inff());
            for (int64_t kw = 0; kw < p->kernel_w; ++kw) {
                const int64_t iw = ow * p->stride_w - p->pad_left + kw * p->dilation_w;
                if (iw < 0 || iw >= p->width) continue;
                __m512 column[4];
                int64_t held = 0; /* valid rows folded into column */
                for (int64_t kh = 0; kh < p->kernel_h; ++kh) {
                    const int64_t ih = r * p->stride_h - p->pad_top + kh * p->dilation_h;
                    if (ih < 0 || ih >= p->height) continue;
                    const float *pixel = rows + (ih * p->width + iw) * 64;
                    for (int v = 0; v < 4; ++v) {
                        const __m512 x = _mm512_load_ps(pixel + 16 * v);
                        column[v] = held ? _mm512_max_ps(x, column[v]) : x;
                    }
                    ++held;
                }
                if (!held) break; /* no valid row: the portable pool leaves −∞ */
                for (int v = 0; v < 4; ++v) best[v] = _mm512_max_ps(best[v], column[v]);
            }
            float *dst = out + (r * p->out_w + ow) * out_stride;
            for (int v = 0; v < 4; ++v) _mm512_mask_storeu_ps(dst + 16 * v, masks[v], best[v]);
        }
    }
}
#endif
