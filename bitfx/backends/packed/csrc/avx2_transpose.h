/* What the AVX2 direct convolutions (float and int8) share: the 8 × 8 float transpose that turns
 * their pixel-major tiles (one 64-float row per pixel) into channel rows, and the end of a row
 * (transpose, then the shared epilogue). Include only from files compiled for AVX2. */
#ifndef BITFX_AVX2_TRANSPOSE_H
#define BITFX_AVX2_TRANSPOSE_H

#include <immintrin.h>
#include <stdint.h>

#include "internal.h"

/* dst[c][p] = src[p][c] for an 8 × 8 block (src rows 64 floats apart, dst rows `stride` apart). */
static inline void bitfx_transpose8(const float *src, float *dst, int64_t stride) {
    __m256 r[8], t[8];
    for (int i = 0; i < 8; ++i) r[i] = _mm256_load_ps(src + 64 * i);
    for (int i = 0; i < 4; ++i) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 2; ++i) {
        r[4 * i] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
        r[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
        r[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
        r[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
    }
    for (int c = 0; c < 4; ++c) {
        _mm256_store_ps(dst + c * stride, _mm256_permute2f128_ps(r[c], r[4 + c], 0x20));
        _mm256_store_ps(dst + (4 + c) * stride, _mm256_permute2f128_ps(r[c], r[4 + c], 0x31));
    }
}

/* Output row oh of image n, channels 64·block …: `stage` holds one 64-float row per pixel of the
 * row (whole 16-pixel blocks, bitfx_direct_stage_floats), followed by room for the 64 channel rows. */
static inline void bitfx_avx2_row_epilogue(const bitfx_fconv_job *job, float *stage, int64_t n, int64_t oh, int64_t block) {
    const bitfx_fconv_desc *d = job->d;
    const int64_t stride = (d->out_w + 15) / 16 * 16;
    float *rows = stage + stride * 64;
    for (int64_t p = 0; p < stride; p += 8)
        for (int64_t c = 0; c < 64; c += 8) bitfx_transpose8(stage + p * 64 + c, rows + c * stride + p, stride);
    for (int64_t c = 0; c < 64 && block * 64 + c < d->out_channels; ++c)
        bitfx_float_epilogue(job, rows + c * stride, n, block * 64 + c, oh * d->out_w, d->out_w);
}

#endif
