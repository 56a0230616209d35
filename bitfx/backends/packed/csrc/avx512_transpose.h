/* What the AVX-512 direct convolutions (float and int8) share: the 16 × 16 float transpose that
 * turns their pixel-major tiles (one 64-float vector row per pixel) into channel rows, and the
 * end of a row (transpose, then the shared epilogue); or, for the fused stem's pixel-major stage
 * (bitfx_fconv_job.stage_pixels), that epilogue on a pixel's 4 vectors in registers. Include only
 * from files compiled for AVX-512 (F). */
#ifndef BITFX_AVX512_TRANSPOSE_H
#define BITFX_AVX512_TRANSPOSE_H

#include <immintrin.h>
#include <stdint.h>

#include "internal.h"

/* dst[c][p] = src[p][c] for a 16 × 16 block (src rows 64 floats apart, dst rows `stride` apart). */
static inline void bitfx_transpose16(const float *src, float *dst, int64_t stride) {
    __m512 r[16], t[16];
    for (int i = 0; i < 16; ++i) r[i] = _mm512_load_ps(src + 64 * i);
    for (int i = 0; i < 8; ++i) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; ++i) {
        r[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
        r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
        r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
        r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
    }
    /* r[4i + j] holds channels {j, j+4, j+8, j+12} (one per 128-bit lane) of pixels 4i .. 4i+3. */
    for (int j = 0; j < 4; ++j) {
        const __m512 a = _mm512_shuffle_f32x4(r[j], r[4 + j], 0x88), b = _mm512_shuffle_f32x4(r[j], r[4 + j], 0xDD);
        const __m512 c = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0x88), e = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0xDD);
        _mm512_store_ps(dst + (j) * stride, _mm512_shuffle_f32x4(a, c, 0x88));
        _mm512_store_ps(dst + (j + 8) * stride, _mm512_shuffle_f32x4(a, c, 0xDD));
        _mm512_store_ps(dst + (j + 4) * stride, _mm512_shuffle_f32x4(b, e, 0x88));
        _mm512_store_ps(dst + (j + 12) * stride, _mm512_shuffle_f32x4(b, e, 0xDD));
    }
}

/* Output row oh of image n, channels 64·block …: `stage` holds one 64-float vector per pixel of the
 * row (whole 16-pixel blocks, bitfx_direct_stage_floats), followed by room for the 64 channel rows. */
static inline void bitfx_direct_row_epilogue(const bitfx_fconv_job *job, float *stage, int64_t n, int64_t oh, int64_t block) {
    const bitfx_fconv_desc *d = job->d;
    const int64_t stride = (d->out_w + 15) / 16 * 16; /* pixels per stage row, whole 16-pixel blocks */
    float *rows = stage + stride * 64;                  /* the transposed stage: 64 channel rows */
    for (int64_t p = 0; p < stride; p += 16)
        for (int64_t c = 0; c < 64; c += 16) bitfx_transpose16(stage + p * 64 + c, rows + c * stride + p, stride);
    for (int64_t c = 0; c < 64 && block * 64 + c < d->out_channels; ++c)
        bitfx_float_epilogue(job, rows + c * stride, n, block * 64 + c, oh * d->out_w, d->out_w);
}

/* The epilogue of bitfx_float_epilogue for the 64 channels of block `block`, 4 vectors (no residual:
 * the fused stem); channels past out_channels get scale and bias 0. */
typedef struct {
    __m512 scale[4], bias[4], lo, hi;
} bitfx_pixel_end;

static inline bitfx_pixel_end bitfx_pixel_end_of(const bitfx_fconv_job *job, int64_t block) {
    bitfx_pixel_end end;
    for (int v = 0; v < 4; ++v) {
        const int64_t left = job->d->out_channels - block * 64 - 16 * v;
        const __mmask16 lanes = left >= 16 ? 0xffff : left > 0 ? (__mmask16)((1u << left) - 1) : 0;
        end.scale[v] = _mm512_maskz_loadu_ps(lanes, job->scale + block * 64 + 16 * v);
        end.bias[v] = _mm512_maskz_loadu_ps(lanes, job->bias + block * 64 + 16 * v);
    }
    end.lo = _mm512_set1_ps((float)job->d->clamp_lo), end.hi = _mm512_set1_ps((float)job->d->clamp_hi);
    return end;
}

/* Vector v of a pixel's sums through the epilogue: the same float operations in the same order,
 * acc·scale, + bias, y < lo ? lo : y, then y > hi ? hi : y. */
static inline __m512 bitfx_pixel_end_apply(const bitfx_pixel_end *end, int v, __m512 acc) {
    const __m512 y = _mm512_add_ps(_mm512_mul_ps(acc, end->scale[v]), end->bias[v]);
    return _mm512_min_ps(end->hi, _mm512_max_ps(end->lo, y));
}

#endif
