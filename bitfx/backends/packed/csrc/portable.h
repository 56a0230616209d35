/* Portable loops shared by every ISA file (compiled with each file's target, so the compiler
 * vectorises them for it): packing a row (NCHW or channels-last input), the im2col panel of the float convolution, a row of
 * float max pooling and columns of a float Gemm. */
#ifndef BITFX_PORTABLE_H
#define BITFX_PORTABLE_H

#include "internal.h"

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

/* The sign bits of `count` (≤ 64) contiguous floats: bit i = (src[i] < 0), bits past `count` 0. */
static inline uint64_t bitfx_sign_bits(const float *src, int64_t count) {
    uint64_t bits = 0;
    int64_t i = 0;
#if defined(__AVX512F__)
    if (count == 64) { /* a whole word: four unmasked compares */
        const __m512 zero = _mm512_setzero_ps();
        return (uint64_t)_mm512_cmp_ps_mask(_mm512_loadu_ps(src), zero, _CMP_LT_OQ) |
               (uint64_t)_mm512_cmp_ps_mask(_mm512_loadu_ps(src + 16), zero, _CMP_LT_OQ) << 16 |
               (uint64_t)_mm512_cmp_ps_mask(_mm512_loadu_ps(src + 32), zero, _CMP_LT_OQ) << 32 |
               (uint64_t)_mm512_cmp_ps_mask(_mm512_loadu_ps(src + 48), zero, _CMP_LT_OQ) << 48;
    }
    for (; i < count; i += 16) {
        const int64_t left = count - i < 16 ? count - i : 16;
        const __m512 v = _mm512_maskz_loadu_ps((__mmask16)((1u << left) - 1), src + i);
        bits |= (uint64_t)_mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_LT_OQ) << i;
    }
#elif defined(__AVX2__)
    for (; i + 8 <= count; i += 8)
        bits |= (uint64_t)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(src + i), _mm256_setzero_ps(), _CMP_LT_OQ)) << i;
#endif
    for (; i < count; ++i) bits |= (uint64_t)(src[i] < 0.0f) << i;
    return bits;
}

/* Packing of row h of image n from channels-last (NHWC) floats: each word is the sign bits of up
 * to 64 contiguous floats of one pixel, so a row is one contiguous read and one contiguous write. */
static inline void bitfx_pack_row_nhwc(const bitfx_pack_desc *d, const float *x, uint64_t *out, int64_t n, int64_t h) {
    const bitfx_packed_geom *g = &d->out;
    const int64_t per_group = d->channels / d->groups;
    uint64_t *row = out + ((n * bitfx_padded_h(g) + g->pad_top + h) * bitfx_padded_w(g) + g->pad_left) * g->words;
    const float *pixel = x + (n * g->height + h) * g->width * d->channels;
    for (int64_t w = 0; w < g->width; ++w, pixel += d->channels, row += g->words) {
        for (int64_t group = 0; group < d->groups; ++group) {
            for (int64_t word = 0; word < d->group_words; ++word) {
                const int64_t c0 = word * 64, count = per_group - c0 < 64 ? per_group - c0 : 64;
                row[group * d->group_words + word] = bitfx_sign_bits(pixel + group * per_group + c0, count);
            }
        }
    }
}

/* Portable packing of row h of image n (the compiler vectorises the inner pixel loop); channels-last
 * input goes to bitfx_pack_row_nhwc. */
static inline void bitfx_pack_row_portable(const bitfx_pack_desc *d, const float *x, uint64_t *out, int64_t n, int64_t h) {
    enum { SPAN = 256 };
    if (d->channels_last) {
        bitfx_pack_row_nhwc(d, x, out, n, h);
        return;
    }
    const bitfx_packed_geom *g = &d->out;
    const int64_t width = g->width, height = g->height, per_group = d->channels / d->groups;
    uint64_t *row = out + ((n * bitfx_padded_h(g) + g->pad_top + h) * bitfx_padded_w(g) + g->pad_left) * g->words;
    uint64_t bits[SPAN];
    for (int64_t group = 0; group < d->groups; ++group) {
        for (int64_t word = 0; word < d->group_words; ++word) {
            const int64_t c0 = group * per_group + word * 64;
            const int64_t c1 = c0 + 64 < (group + 1) * per_group ? c0 + 64 : (group + 1) * per_group;
            const int64_t slot = group * d->group_words + word;
            for (int64_t w0 = 0; w0 < width; w0 += SPAN) {
                const int64_t span = width - w0 < SPAN ? width - w0 : SPAN;
                for (int64_t i = 0; i < span; ++i) bits[i] = 0;
                for (int64_t c = c0; c < c1; ++c) {
                    const float *src = x + ((n * d->channels + c) * height + h) * width + w0;
                    const int shift = (int)(c - c0);
                    for (int64_t i = 0; i < span; ++i) bits[i] |= (uint64_t)(src[i] < 0.0f) << shift;
                }
                for (int64_t i = 0; i < span; ++i) row[(w0 + i) * g->words + slot] = bits[i];
            }
        }
    }
}

#if defined(__AVX512F__)
/* Floats src[0], src[stride], …: `left` (≤ 16) of them, stride 1 or 2, with masked loads that never
 * touch memory past the last one read. */
static inline __m512 bitfx_load_strided16(const float *src, int64_t left, int64_t stride) {
    const __mmask16 lanes = (__mmask16)((1u << left) - 1);
    if (stride == 1) return _mm512_maskz_loadu_ps(lanes, src);
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const int64_t needed = 2 * left - 1; /* source floats up to the last even one */
    const __mmask16 low = (__mmask16)(needed >= 16 ? 0xffffu : (1u << needed) - 1);
    const __mmask16 high = (__mmask16)(needed > 16 ? (1u << (needed - 16)) - 1 : 0);
    return _mm512_permutex2var_ps(_mm512_maskz_loadu_ps(low, src), even, _mm512_maskz_loadu_ps(high, src + 16));
}
#endif

/* dst[i] = src[i·stride] (with AVX-512 for strides 1 and 2, which the compiler does not
 * vectorise well for short rows). */
static inline void bitfx_copy_strided(float *restrict dst, const float *restrict src, int64_t count, int64_t stride) {
#if defined(__AVX512F__)
    if (stride <= 2) {
        for (int64_t i = 0; i < count; i += 16) {
            const int64_t left = count - i < 16 ? count - i : 16;
            _mm512_mask_storeu_ps(dst + i, (__mmask16)((1u << left) - 1), bitfx_load_strided16(src + i * stride, left, stride));
        }
        return;
    }
#endif
    for (int64_t i = 0; i < count; ++i) dst[i] = src[i * stride];
}

/* dst[i] = max(dst[i], src[i·stride]), the same way. */
static inline void bitfx_max_strided(float *restrict dst, const float *restrict src, int64_t count, int64_t stride) {
#if defined(__AVX512F__)
    if (stride <= 2) {
        for (int64_t i = 0; i < count; i += 16) {
            const int64_t left = count - i < 16 ? count - i : 16;
            const __mmask16 lanes = (__mmask16)((1u << left) - 1);
            const __m512 best = _mm512_max_ps(_mm512_maskz_loadu_ps(lanes, dst + i), bitfx_load_strided16(src + i * stride, left, stride));
            _mm512_mask_storeu_ps(dst + i, lanes, best);
        }
        return;
    }
#endif
    for (int64_t i = 0; i < count; ++i) dst[i] = src[i * stride] > dst[i] ? src[i * stride] : dst[i];
}

/* The im2col panel of output pixels p0 .. p0+count−1 of image n, group g: panel[k][i], k = (c, kh, kw),
 * one row segment of the output at a time. */
static inline void bitfx_float_panel_portable(const bitfx_fconv_desc *d, const float *x, int64_t n, int64_t g, int64_t p0, int64_t count, float *panel) {
    const int64_t per_group = d->channels / d->groups, kernel = d->kernel_h * d->kernel_w;
    const float pad = (float)d->pad_value;
    for (int64_t i0 = 0; i0 < count;) {
        const int64_t oh = (p0 + i0) / d->out_w, ow0 = (p0 + i0) % d->out_w;
        const int64_t span = d->out_w - ow0 < count - i0 ? d->out_w - ow0 : count - i0;
        for (int64_t c = 0; c < per_group; ++c) {
            const float *plane = x + ((n * d->channels + g * per_group + c) * d->height) * d->width;
            for (int64_t kh = 0; kh < d->kernel_h; ++kh) {
                const int64_t ih = oh * d->stride_h - d->pad_top + kh * d->dilation_h;
                for (int64_t kw = 0; kw < d->kernel_w; ++kw) {
                    float *dst = panel + (c * kernel + kh * d->kernel_w + kw) * BITFX_FLOAT_CHUNK + i0;
                    const int64_t iw0 = ow0 * d->stride_w - d->pad_left + kw * d->dilation_w;
                    if (ih < 0 || ih >= d->height) {
                        for (int64_t i = 0; i < span; ++i) dst[i] = pad;
                        continue;
                    }
                    int64_t lo = 0, hi = span; /* pixels whose column is inside the image */
                    while (lo < span && iw0 + lo * d->stride_w < 0) ++lo;
                    while (hi > lo && iw0 + (hi - 1) * d->stride_w >= d->width) --hi;
                    for (int64_t i = 0; i < lo; ++i) dst[i] = pad;
                    bitfx_copy_strided(dst + lo, plane + ih * d->width + iw0 + lo * d->stride_w, hi - lo, d->stride_w);
                    for (int64_t i = hi; i < span; ++i) dst[i] = pad;
                }
            }
        }
        i0 += span;
    }
}

/* dst[ow] = max(dst[ow], max over the kernel's columns of row), the column range of each tap
 * clipped once so the inner loop has no bounds tests. */
static inline void bitfx_fmaxpool_columns(const bitfx_fmaxpool_desc *d, const float *row, float *dst) {
    for (int64_t kw = 0; kw < d->kernel_w; ++kw) {
        const int64_t shift = kw * d->dilation_w - d->pad_left;
        int64_t lo = 0, hi = d->out_w;
        while (lo < hi && lo * d->stride_w + shift < 0) ++lo;
        while (hi > lo && (hi - 1) * d->stride_w + shift >= d->width) --hi;
        bitfx_max_strided(dst + lo, row + shift + lo * d->stride_w, hi - lo, d->stride_w);
    }
}

/* One output row of a float max pool. Rows up to BITFX_POOL_ROW floats wide are first reduced over
 * the kernel's rows (contiguous maxima), so the strided column taps run once, not once per row. */
static inline void bitfx_fmaxpool_row_portable(const bitfx_fmaxpool_desc *d, const float *x, float *out, int64_t r) {
    const int64_t plane = r / d->out_h, oh = r % d->out_h;
    const float *src = x + plane * d->height * d->width;
    float *dst = out + r * d->out_w;
    float rows_max[BITFX_POOL_ROW];
    int64_t reduced = 0; /* input rows folded into rows_max */
    const int64_t out_w = d->out_w; /* read once: the stores below could alias *d, which blocks vectorising */
    for (int64_t ow = 0; ow < out_w; ++ow) dst[ow] = -__builtin_inff();
    for (int64_t kh = 0; kh < d->kernel_h; ++kh) {
        const int64_t ih = oh * d->stride_h - d->pad_top + kh * d->dilation_h;
        if (ih < 0 || ih >= d->height) continue;
        const float *row = src + ih * d->width;
        if (d->width > BITFX_POOL_ROW) {
            bitfx_fmaxpool_columns(d, row, dst);
            continue;
        }
        if (reduced == 0)
            bitfx_copy_strided(rows_max, row, d->width, 1); /* vector copies (a plain loop becomes `rep movsq`) */
        else
            for (int64_t i = 0; i < d->width; ++i) rows_max[i] = row[i] > rows_max[i] ? row[i] : rows_max[i];
        ++reduced;
    }
    if (reduced > 0) bitfx_fmaxpool_columns(d, rows_max, dst);
}

/* Columns c0 .. c1−1 of a float Gemm for every row; the channel loop is the vector loop. */
static inline void bitfx_fgemm_columns_portable(const bitfx_fgemm_desc *d, const float *x, const float *w, const float *bias, float *out,
                                                int64_t c0, int64_t c1) {
    enum { SPAN = 256 };
    const float alpha = (float)d->alpha, beta = (float)d->beta;
    float acc[SPAN];
    for (int64_t n = 0; n < d->rows; ++n) {
        const float *xn = x + n * d->k;
        for (int64_t a = c0; a < c1; a += SPAN) {
            const int64_t span = c1 - a < SPAN ? c1 - a : SPAN;
            for (int64_t c = 0; c < span; ++c) acc[c] = 0.0f;
            for (int64_t i = 0; i < d->k; ++i) {
                const float xi = xn[i];
                const float *wi = w + i * d->channels + a;
                for (int64_t c = 0; c < span; ++c) acc[c] += xi * wi[c];
            }
            float *dst = out + n * d->channels + a;
            for (int64_t c = 0; c < span; ++c) dst[c] = d->has_bias ? acc[c] * alpha + bias[a + c] * beta : acc[c] * alpha;
        }
    }
}

#endif
