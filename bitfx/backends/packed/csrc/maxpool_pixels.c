/* The fused stem's max pool over pixel-major rows (stem.c, with bitfx_fconv_job.stage_pixels): each
 * pixel's 64 channels are 4 vectors, so a pool output pixel is a few vector maxima written straight
 * to its channels-last place, with no transposes. The comparisons are those of the portable pool
 * (bitfx_fmaxpool_row_portable, rows up to BITFX_POOL_ROW wide): per kernel column, its first valid
 * row, then max(row, so far) down the rows; the output starts at −∞ and takes max(output, column)
 * column by column. So the outputs are the same bits, zeros' signs and NaN included. Compiled for
 * AVX-512 (F); stem.c only calls it when the row function is an AVX-512 one. */
#if defined(__x86_64__)
#pragma GCC target("avx512f")
#include <immintrin.h>

#include "internal.h"

/* The taps [*k0, *k1) of a kernel of `kernel` taps at `start` + k · dilation that fall inside [0, size). */
static void inside(int64_t start, int64_t kernel, int64_t dilation, int64_t size, int64_t *k0, int64_t *k1) {
    *k0 = 0, *k1 = kernel;
    while (*k0 < *k1 && start + *k0 * dilation < 0) ++*k0;
    while (*k1 > *k0 && start + (*k1 - 1) * dilation >= size) --*k1;
}

void bitfx_maxpool_pixels_avx512(const bitfx_fmaxpool_desc *p, const float *rows, float *out, int64_t out_stride, int64_t channels) {
    __mmask16 masks[4];
    for (int v = 0; v < 4; ++v) {
        const int64_t left = channels - 16 * v;
        masks[v] = left >= 16 ? 0xffff : left > 0 ? (__mmask16)((1u << left) - 1) : 0;
    }
    const int64_t row_step = p->dilation_h * p->width * 64; /* floats from a tap's row to the next one's */
    for (int64_t r = 0; r < p->out_h; ++r) {
        int64_t kh0, kh1, kw0, kw1;
        inside(r * p->stride_h - p->pad_top, p->kernel_h, p->dilation_h, p->height, &kh0, &kh1);
        for (int64_t ow = 0; ow < p->out_w; ++ow) {
            __m512 best[4];
            for (int v = 0; v < 4; ++v) best[v] = _mm512_set1_ps(-__builtin_inff());
            inside(ow * p->stride_w - p->pad_left, p->kernel_w, p->dilation_w, p->width, &kw0, &kw1);
            for (int64_t kw = kh0 < kh1 ? kw0 : kw1; kw < kw1; ++kw) { /* no valid row: the portable pool leaves −∞ */
                const int64_t ih = r * p->stride_h - p->pad_top + kh0 * p->dilation_h;
                const float *tap = rows + (ih * p->width + ow * p->stride_w - p->pad_left + kw * p->dilation_w) * 64;
                __m512 column[4];
                for (int v = 0; v < 4; ++v) column[v] = _mm512_load_ps(tap + 16 * v);
                for (int64_t kh = kh0 + 1; kh < kh1; ++kh) {
                    tap += row_step;
                    for (int v = 0; v < 4; ++v) column[v] = _mm512_max_ps(_mm512_load_ps(tap + 16 * v), column[v]);
                }
                for (int v = 0; v < 4; ++v) best[v] = _mm512_max_ps(best[v], column[v]);
            }
            float *dst = out + (r * p->out_w + ow) * out_stride;
            for (int v = 0; v < 4; ++v) _mm512_mask_storeu_ps(dst + 16 * v, masks[v], best[v]);
        }
    }
}
#endif
