/* The int8 convolution's AVX-512 VNNI row (see int8.c): 64 output channels are 4 vectors of 16
 * int32 sums, and a register tile is 6 output pixels of a row × those 64 channels (24
 * accumulators; a row's 4 leftover pixels one 4-pixel tile, any others one at a time). Per quad of
 * 4 kernel columns: 4 weight loads ([64 channels][4 taps] s8) and, per pixel, one broadcast of its
 * 4 u8 inputs, for 24 VPDPBUSD (u8 · s8, 4 products each, into int32).
 * The quantized input has a border, so no tap is tested. The sums less zero_point · Σ w become
 * floats, transposed into channel rows for the shared epilogue; or, for the fused stem's
 * pixel-major stage (bitfx_fconv_job.stage_pixels), they go through the same epilogue in registers
 * (bitfx_pixel_end_apply) and are stored as the pixel's 64 channels, so nothing is transposed. The
 * kernel columns run in quads of 4 (7 → 8: 147 of 168 products useful); a quad needs 4 input bytes
 * adjacent in memory, so packing (channel, column) taps instead (3 × 7 = 21 → 24 per kernel row)
 * wastes as much. Every function here is compiled for AVX-512 VNNI; int8.c only calls them on CPUs
 * that have it. */
#if defined(__x86_64__)
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,avx512vnni")
#include <immintrin.h>
#include <string.h>

#include "avx512_transpose.h"
#include "internal.h"

#define PIXELS 6

static inline __m512i broadcast4(const uint8_t *p) {
    int32_t v;
    memcpy(&v, p, sizeof v);
    return _mm512_set1_epi32(v);
}

#define DOT(j)                                                    \
    do {                                                          \
        const __m512i x = broadcast4(src + (j) * sw);             \
        a##j##0 = _mm512_dpbusd_epi32(a##j##0, x, w0);            \
        a##j##1 = _mm512_dpbusd_epi32(a##j##1, x, w1);            \
        a##j##2 = _mm512_dpbusd_epi32(a##j##2, x, w2);            \
        a##j##3 = _mm512_dpbusd_epi32(a##j##3, x, w3);            \
    } while (0)
/* The sums of the tile of pixels ow0 … × the block's 64 channels: `DOTS` once per quad (the DOT of
 * every pixel of the tile). */
#define TILE(DOTS)                                                                                                   \
    do {                                                                                                             \
        for (int64_t c = 0; c < d->channels; ++c) {                                                                  \
            for (int64_t kh = 0; kh < d->kernel_h; ++kh) {                                                           \
                const uint8_t *row = image + (c * in->rows + oh * d->stride_h + kh * d->dilation_h) * in->cols + ow0 * sw; \
                const int8_t *wk = w + (c * d->kernel_h + kh) * quads * 256;                                         \
                for (int64_t q = 0; q < quads; ++q, wk += 256) {                                                     \
                    const uint8_t *src = row + 4 * q;                                                                \
                    const __m512i w0 = _mm512_load_si512(wk), w1 = _mm512_load_si512(wk + 64);                       \
                    const __m512i w2 = _mm512_load_si512(wk + 128), w3 = _mm512_load_si512(wk + 192);                \
                    DOTS;                                                                                            \
                }                                                                                                    \
            }                                                                                                        \
        }                                                                                                            \
    } while (0)

/* Pixel `pixel` (64 floats): the sums less the correction, as floats; through `end` when it is not null. */
static inline void store_pixel(float *pixel, __m512i a0, __m512i a1, __m512i a2, __m512i a3, const __m512i *c, const bitfx_pixel_end *end) {
    __m512 y[4] = {_mm512_cvtepi32_ps(_mm512_sub_epi32(a0, c[0])), _mm512_cvtepi32_ps(_mm512_sub_epi32(a1, c[1])),
                   _mm512_cvtepi32_ps(_mm512_sub_epi32(a2, c[2])), _mm512_cvtepi32_ps(_mm512_sub_epi32(a3, c[3]))};
    for (int v = 0; v < 4; ++v) _mm512_store_ps(pixel + 16 * v, end ? bitfx_pixel_end_apply(end, v, y[v]) : y[v]);
}

#define STORE(j) store_pixel(out + (ow0 + (j)) * 64, a##j##0, a##j##1, a##j##2, a##j##3, c, end)

void bitfx_int8_row_vnni(const bitfx_fconv_job *job, const float *block_weights, float *stage, int64_t n, int64_t oh, int64_t block) {
    const bitfx_fconv_desc *d = job->d;
    const bitfx_int8_input *in = job->int8;
    const int64_t sw = d->stride_w, quads = in->quads;
    const uint8_t *image = in->x + n * d->channels * in->rows * in->cols;
    const int8_t *w = in->weights + block * d->channels * d->kernel_h * quads * 256;
    const int32_t *correction = in->correction + block * 64;
    const __m512i c[4] = {_mm512_loadu_si512(correction), _mm512_loadu_si512(correction + 16), _mm512_loadu_si512(correction + 32),
                          _mm512_loadu_si512(correction + 48)};
    const bitfx_pixel_end fused = job->stage_pixels ? bitfx_pixel_end_of(job, block) : (bitfx_pixel_end){0};
    const bitfx_pixel_end *end = job->stage_pixels ? &fused : 0;
    float *out = /* pixel-major: the row's tiles, or the fused stem's stage row */
         job->stage_pixels ? job->stage_out + (oh - job->stage_row0) * d->out_w * 64 : stage;
    (void)block_weights;
    int64_t ow0 = 0;
    for (; ow0 + PIXELS <= d->out_w; ow0 += PIXELS) {
        __m512i a00 = _mm512_setzero_si512(), a01 = a00, a02 = a00, a03 = a00, a10 = a00, a11 = a00, a12 = a00, a13 = a00;
        __m512i a20 = a00, a21 = a00, a22 = a00, a23 = a00, a30 = a00, a31 = a00, a32 = a00, a33 = a00;
        __m512i a40 = a00, a41 = a00, a42 = a00, a43 = a00, a50 = a00, a51 = a00, a52 = a00, a53 = a00;
        TILE(DOT(0); DOT(1); DOT(2); DOT(3); DOT(4); DOT(5));
        STORE(0); STORE(1); STORE(2); STORE(3); STORE(4); STORE(5);
    }
    if (ow0 + 4 <= d->out_w) { /* 4 leftover pixels (ResNet-18's 112 = 18 · 6 + 4) in one tile */
        __m512i a00 = _mm512_setzero_si512(), a01 = a00, a02 = a00, a03 = a00, a10 = a00, a11 = a00, a12 = a00, a13 = a00;
        __m512i a20 = a00, a21 = a00, a22 = a00, a23 = a00, a30 = a00, a31 = a00, a32 = a00, a33 = a00;
        TILE(DOT(0); DOT(1); DOT(2); DOT(3));
        STORE(0); STORE(1); STORE(2); STORE(3);
        ow0 += 4;
    }
    for (; ow0 < d->out_w; ++ow0) { /* the rest, one at a time */
        __m512i a00 = _mm512_setzero_si512(), a01 = a00, a02 = a00, a03 = a00;
        TILE(DOT(0));
        STORE(0);
    }
    if (!end) bitfx_direct_row_epilogue(job, stage, n, oh, block);
}

void bitfx_quantize_vnni(const float *x, uint8_t *q, int64_t count, float inv_scale, float zero_point) {
    const __m512 scale = _mm512_set1_ps(inv_scale), zero = _mm512_set1_ps(zero_point);
    const __m512 lo = _mm512_setzero_ps(), hi = _mm512_set1_ps(255.0f);
    for (int64_t i = 0; i < count; i += 16) {
        const __mmask16 mask = count - i >= 16 ? 0xffff : (__mmask16)((1u << (count - i)) - 1);
        __m512 v = _mm512_add_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(mask, x + i), scale), zero);
        v = _mm512_min_ps(_mm512_max_ps(v, lo), hi); /* max(NaN, 0) = 0 */
        _mm512_mask_cvtepi32_storeu_epi8(q + i, mask, _mm512_cvtps_epi32(v));
    }
}
#endif
