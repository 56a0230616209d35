/* The int8 convolution's AVX2 row (see int8.c), exact: AVX2 has no u8 · s8 → int32 instruction, and
 * VPMADDUBSW (u8 · s8 pairs summed into int16) saturates (255 · 127 · 2 > 32767), so the u8 codes and
 * s8 weights are widened to int16 once per call (int8.c) and multiplied with VPMADDWD, whose pairs of
 * products are summed into int32 without rounding or saturation: the same int32 sums as the VNNI and
 * plain rows. Weights [block][c][kh][quad][half][64 channels][2 taps] int16 (half 0: taps 0, 1 of the
 * quad; half 1: taps 2, 3), so one VPMADDWD of a broadcast input pair gives 8 channels' sums directly;
 * half quads wholly past the kernel's last column (zero weights) are skipped.
 * A register tile is 4 output pixels × 16 channels (8 accumulators of 8 int32; 6 pixels spill and run
 * slower), run for each quarter of the 64-channel block; per half quad: 2 weight loads, 4 broadcasts,
 * 8 VPMADDWD and 8 adds. The sums less zero_point · Σ w become floats in `stage` (pixel-major), then
 * the AVX2 row end. Also the quantization of the AVX2 path. Compiled for AVX2; int8.c only calls
 * these on CPUs that have it. */
#if defined(__x86_64__)
#pragma GCC target("avx2")
#include <immintrin.h>
#include <string.h>

#include "avx2_transpose.h"
#include "internal.h"

#define PIXELS 4

static inline __m256i broadcast_pair(const uint16_t *p) {
    int32_t v;
    memcpy(&v, p, sizeof v);
    return _mm256_set1_epi32(v);
}

#define DOT(j)                                                                       \
    do {                                                                             \
        const __m256i x = broadcast_pair(src + (j) * sw);                            \
        a##j##0 = _mm256_add_epi32(a##j##0, _mm256_madd_epi16(x, w0));               \
        a##j##1 = _mm256_add_epi32(a##j##1, _mm256_madd_epi16(x, w1));               \
    } while (0)
#define STORE(j)                                                                                 \
    do {                                                                                         \
        float *pixel = stage + (ow0 + (j)) * 64 + 16 * quarter;                                  \
        _mm256_store_ps(pixel, _mm256_cvtepi32_ps(_mm256_sub_epi32(a##j##0, c0)));               \
        _mm256_store_ps(pixel + 8, _mm256_cvtepi32_ps(_mm256_sub_epi32(a##j##1, c1)));           \
    } while (0)

/* The sums of pixels ow0 … of the tile × channels 16·quarter … 16·quarter+15 of the block: `DOTS` once
 * per half quad (the DOT of every pixel of the tile). */
#define TILE(DOTS)                                                                                 \
    do {                                                                                           \
        for (int64_t c = 0; c < d->channels; ++c) {                                                \
            for (int64_t kh = 0; kh < d->kernel_h; ++kh) {                                         \
                const int64_t ih = oh * d->stride_h + kh * d->dilation_h;                          \
                const uint16_t *row = image + (c * in->rows + ih) * in->cols + ow0 * sw;           \
                const int16_t *wk = w + (c * d->kernel_h + kh) * quads * 256 + 32 * quarter;       \
                for (int64_t q = 0; q < halves; ++q, wk += 128) {                                  \
                    const uint16_t *src = row + 2 * q;                                             \
                    const __m256i w0 = _mm256_load_si256((const __m256i *)wk);                     \
                    const __m256i w1 = _mm256_load_si256((const __m256i *)(wk + 16));              \
                    DOTS;                                                                          \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
    } while (0)

void bitfx_int8_row_avx2(const bitfx_fconv_job *job, const float *block_weights, float *stage, int64_t n, int64_t oh, int64_t block) {
    const bitfx_fconv_desc *d = job->d;
    const bitfx_int8_input *in = job->int8;
    const int64_t sw = d->stride_w, quads = in->quads;
    const int64_t halves = (d->kernel_w + 1) / 2; /* half quads past the last kernel column hold zero weights */
    const uint16_t *image = in->x16 + n * d->channels * in->rows * in->cols;
    const int16_t *w = in->weights16 + block * d->channels * d->kernel_h * quads * 256;
    (void)block_weights;
    for (int quarter = 0; quarter < 4; ++quarter) {
        const int32_t *correction = in->correction + block * 64 + 16 * quarter;
        const __m256i c0 = _mm256_loadu_si256((const __m256i *)correction);
        const __m256i c1 = _mm256_loadu_si256((const __m256i *)(correction + 8));
        int64_t ow0 = 0;
        for (; ow0 + PIXELS <= d->out_w; ow0 += PIXELS) {
            __m256i a00 = _mm256_setzero_si256(), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00;
            __m256i a30 = a00, a31 = a00;
            TILE(DOT(0); DOT(1); DOT(2); DOT(3));
            STORE(0); STORE(1); STORE(2); STORE(3);
        }
        for (; ow0 < d->out_w; ++ow0) { /* the leftover pixels, one at a time */
            __m256i a00 = _mm256_setzero_si256(), a01 = a00;
            TILE(DOT(0));
            STORE(0);
        }
    }
    bitfx_avx2_row_epilogue(job, stage, n, oh, block);
}

void bitfx_quantize_avx2(const float *x, uint8_t *q, int64_t count, float inv_scale, float zero_point) {
    const __m256 scale = _mm256_set1_ps(inv_scale), zero = _mm256_set1_ps(zero_point);
    const __m256 lo = _mm256_setzero_ps(), hi = _mm256_set1_ps(255.0f);
    int64_t i = 0;
    for (; i + 8 <= count; i += 8) {
        __m256 v = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), scale), zero);
        v = _mm256_min_ps(_mm256_max_ps(v, lo), hi); /* max(NaN, 0) = 0 */
        const __m256i codes = _mm256_cvtps_epi32(v);
        const __m128i words = _mm_packus_epi32(_mm256_castsi256_si128(codes), _mm256_extracti128_si256(codes, 1));
        _mm_storel_epi64((__m128i *)(q + i), _mm_packus_epi16(words, words));
    }
    for (; i < count; ++i) {
        __m128 v = _mm_add_ss(_mm_mul_ss(_mm_set_ss(x[i]), _mm256_castps256_ps128(scale)), _mm256_castps256_ps128(zero));
        v = _mm_min_ss(_mm_max_ss(v, _mm256_castps256_ps128(lo)), _mm256_castps256_ps128(hi));
        q[i] = (uint8_t)_mm_cvtss_si32(v);
    }
}
#endif
