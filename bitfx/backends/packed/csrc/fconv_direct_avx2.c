/* The direct float convolution on AVX2 (group 1, zero padding; see fconv_row in isa_avx512.c):
 * weights in blocks of 64 output channels, a register tile of 6 output pixels of a row × 16
 * channels (12 accumulators of 8; per tap 2 weight loads and 6 broadcasts for 12 FMAs), run for
 * each quarter of the 64-channel block; taps summed in the same (c, kh, kw) order as the AVX-512
 * and im2col kernels, taps on the zero border skipped. Tiles go to `stage` pixel-major (one 64-float
 * row per pixel), are transposed 8 × 8 into channel rows, and the shared epilogue writes the NCHW
 * row. Compiled for AVX2+FMA; the dispatchers only call it on CPUs that have both. */
#if defined(__x86_64__)
#pragma GCC target("avx2,fma")
#include <immintrin.h>

#include "avx2_transpose.h"
#include "internal.h"

#define PIXELS 6

/* One output pixel × 64 channels with bounds checks on every tap (image edges, leftover pixels). */
static void direct_pixel(const bitfx_fconv_desc *d, const float *image, const float *w, int64_t oh, int64_t ow, float *pixel) {
    __m256 acc[8];
    for (int v = 0; v < 8; ++v) acc[v] = _mm256_setzero_ps();
    const int64_t taps = d->kernel_h * d->kernel_w;
    for (int64_t c = 0; c < d->channels; ++c) {
        for (int64_t kh = 0; kh < d->kernel_h; ++kh) {
            const int64_t ih = oh * d->stride_h - d->pad_top + kh * d->dilation_h;
            if (ih < 0 || ih >= d->height) continue;
            for (int64_t kw = 0; kw < d->kernel_w; ++kw) {
                const int64_t iw = ow * d->stride_w - d->pad_left + kw * d->dilation_w;
                if (iw < 0 || iw >= d->width) continue;
                const float *wk = w + (c * taps + kh * d->kernel_w + kw) * 64;
                const __m256 b = _mm256_set1_ps(image[(c * d->height + ih) * d->width + iw]);
                for (int v = 0; v < 8; ++v) acc[v] = _mm256_fmadd_ps(b, _mm256_load_ps(wk + 8 * v), acc[v]);
            }
        }
    }
    for (int v = 0; v < 8; ++v) _mm256_store_ps(pixel + 8 * v, acc[v]);
}

#define STEP(j)                                         \
    do {                                                \
        const __m256 b = _mm256_set1_ps(src[(j) * sw]); \
        a##j##0 = _mm256_fmadd_ps(b, w0, a##j##0);      \
        a##j##1 = _mm256_fmadd_ps(b, w1, a##j##1);      \
    } while (0)
#define STORE(j)                                                   \
    do {                                                           \
        float *pixel = stage + (ow0 + (j)) * 64 + 16 * quarter;    \
        _mm256_store_ps(pixel, a##j##0);                           \
        _mm256_store_ps(pixel + 8, a##j##1);                       \
    } while (0)

void bitfx_fconv_row_avx2(const bitfx_fconv_job *job, const float *block_weights, float *stage, int64_t n, int64_t oh, int64_t block) {
    const bitfx_fconv_desc *d = job->d;
    const int64_t sw = d->stride_w, dw = d->dilation_w, taps = d->kernel_h * d->kernel_w;
    const float *image = job->x + n * d->channels * d->height * d->width;
    const float *w = block_weights + block * job->k * 64;
    /* Columns whose every tap is inside the image, and rows of taps inside it. */
    int64_t lo = 0, hi = d->out_w, kh0 = 0, kh1 = d->kernel_h;
    while (lo < hi && lo * sw - d->pad_left < 0) ++lo;
    while (hi > lo && (hi - 1) * sw - d->pad_left + (d->kernel_w - 1) * dw >= d->width) --hi;
    while (kh0 < kh1 && oh * d->stride_h - d->pad_top + kh0 * d->dilation_h < 0) ++kh0;
    while (kh1 > kh0 && oh * d->stride_h - d->pad_top + (kh1 - 1) * d->dilation_h >= d->height) --kh1;
    for (int64_t ow = 0; ow < lo; ++ow) direct_pixel(d, image, w, oh, ow, stage + ow * 64);
    int64_t ow0 = lo;
    for (; ow0 + PIXELS <= hi; ow0 += PIXELS) {
        const float *column = image + ow0 * sw - d->pad_left;
        for (int quarter = 0; quarter < 4; ++quarter) {
            __m256 a00 = _mm256_setzero_ps(), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00;
            __m256 a30 = a00, a31 = a00, a40 = a00, a41 = a00, a50 = a00, a51 = a00;
            for (int64_t c = 0; c < d->channels; ++c) {
                for (int64_t kh = kh0; kh < kh1; ++kh) {
                    const int64_t ih = oh * d->stride_h - d->pad_top + kh * d->dilation_h;
                    const float *row = column + (c * d->height + ih) * d->width;
                    const float *wk = w + (c * taps + kh * d->kernel_w) * 64 + 16 * quarter;
                    for (int64_t kw = 0; kw < d->kernel_w; ++kw, wk += 64) {
                        const float *src = row + kw * dw;
                        const __m256 w0 = _mm256_load_ps(wk), w1 = _mm256_load_ps(wk + 8);
                        STEP(0); STEP(1); STEP(2); STEP(3); STEP(4); STEP(5);
                    }
                }
            }
            STORE(0); STORE(1); STORE(2); STORE(3); STORE(4); STORE(5);
        }
    }
    for (int64_t ow = ow0; ow < d->out_w; ++ow) direct_pixel(d, image, w, oh, ow, stage + ow * 64);
    bitfx_avx2_row_epilogue(job, stage, n, oh, block);
}
#endif
