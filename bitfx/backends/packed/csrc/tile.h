/* Pieces of the binary convolution shared by every ISA file (compiled with each file's target):
 * the input pointers of a tile, the portable packing loop, and the portable output transform. */
#ifndef BITFX_TILE_H
#define BITFX_TILE_H

#include "internal.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#define BITFX_TILE_PIXELS 4     /* output pixels per tile of the portable and AVX2 paths */
#define BITFX_MAX_TILE_PIXELS 8 /* … and of the AVX-512 path */

static inline int64_t bitfx_padded_h(const bitfx_packed_geom *g) { return g->pad_top + g->height + g->pad_bottom; }
static inline int64_t bitfx_padded_w(const bitfx_packed_geom *g) { return g->pad_left + g->width + g->pad_right; }

/* Output coordinates and first input word (group g) of each pixel of a tile; a short tile
 * repeats its last pixel. */
typedef struct {
    const uint64_t *px[BITFX_MAX_TILE_PIXELS];
    int64_t oh[BITFX_MAX_TILE_PIXELS], ow[BITFX_MAX_TILE_PIXELS];
} bitfx_tile;

static inline void bitfx_tile_pixels(const bitfx_bconv_job *job, int64_t n, int64_t g, int64_t oh, int64_t ow, int64_t count, int pixels,
                                     bitfx_tile *tile) {
    const bitfx_bconv_desc *d = job->d;
    const int64_t hp = bitfx_padded_h(&d->in), wp = bitfx_padded_w(&d->in);
    const int64_t row0 = d->in.pad_top - d->pad_top, col0 = d->in.pad_left - d->pad_left;
    const uint64_t *image = job->x + n * hp * wp * d->in.words + g * d->group_words;
    for (int j = 0; j < pixels; ++j) {
        tile->oh[j] = oh, tile->ow[j] = ow;
        tile->px[j] = image + ((row0 + oh * d->stride_h) * wp + col0 + ow * d->stride_w) * d->in.words;
        if (j + 1 < count && ++ow == d->out_w) ow = 0, ++oh;
    }
}

/* Defines `bconv_tiles` (see bitfx_isa_ops) as a loop over `tile_function` (tiles of `pixels`
 * output pixels), which the compiler inlines. */
#define BITFX_TILE_LOOP(tile_function, pixels)                                                                              \
    static void bconv_tiles(const bitfx_bconv_job *job, int64_t n, int64_t g, int64_t block, int64_t first, int64_t last) { \
        const int64_t plane = job->d->out_h * job->d->out_w, width = job->d->out_w;                                         \
        int64_t q0 = first * (pixels), oh = q0 / width, ow = q0 % width;                                                  \
        for (int64_t t = first; t < last; ++t, q0 += (pixels)) {                                                            \
            tile_function(job, n, g, block, q0, oh, ow, plane - q0 < (pixels) ? plane - q0 : (pixels));                    \
            for (ow += (pixels); ow >= width; ow -= width) ++oh;                                                            \
        }                                                                                                                   \
    }

/* Where output pixel (oh, ow) of image n starts in a packed output, in 32-bit half-words. */
static inline uint32_t *bitfx_packed_out_pixel(const bitfx_bconv_job *job, int64_t n, int64_t oh, int64_t ow) {
    const bitfx_bconv_desc *d = job->d;
    const int64_t row = n * bitfx_padded_h(&d->out) + d->out.pad_top + oh;
    return (uint32_t *)job->out + ((row * bitfx_padded_w(&d->out) + d->out.pad_left + ow) * d->out.words) * 2;
}

/* The output transform from exact dot products dots[j][lane] (any ISA may call it). */
static inline void bitfx_bconv_epilogue(const bitfx_bconv_job *job, const bitfx_tile *tile, int64_t n, int64_t g, int64_t block, int64_t q0,
                                        int64_t count, const int64_t dots[BITFX_TILE_PIXELS][BITFX_BLOCK]) {
    const bitfx_bconv_desc *d = job->d;
    const int64_t lane0 = (g * d->blocks + block) * BITFX_BLOCK;
    if (d->out_mode == BITFX_OUT_PACKED) {
        /* groups == 1 here (checked by the dispatcher): block b is half-word b of the pixel. */
        for (int64_t j = 0; j < count; ++j) {
            uint32_t bits = 0;
            for (int l = 0; l < BITFX_BLOCK; ++l) bits |= (uint32_t)(dots[j][l] < job->threshold[lane0 + l]) << l;
            uint32_t *pixel = bitfx_packed_out_pixel(job, n, tile->oh[j], tile->ow[j]);
            pixel[block] = bits ^ job->flip[g * d->blocks + block];
            if (block == d->blocks - 1 && (d->blocks & 1)) pixel[block + 1] = 0;
        }
        return;
    }
    const int64_t per_group = d->out_channels / d->groups, plane = d->out_h * d->out_w;
    const float lo = (float)d->clamp_lo, hi = (float)d->clamp_hi;
    for (int l = 0; l < BITFX_BLOCK && block * BITFX_BLOCK + l < per_group; ++l) {
        const int64_t index = (n * d->out_channels + g * per_group + block * BITFX_BLOCK + l) * plane + q0;
        float *out = (float *)job->out + index;
        for (int64_t j = 0; j < count; ++j) {
            float y = bitfx_binary_float(dots[j][l], job->scale[lane0 + l], job->bias[lane0 + l]);
            if (d->has_residual) y += job->residual[index + j];
            y = y < lo ? lo : y;
            out[j] = y > hi ? hi : y;
        }
    }
}

/* Portable packing of row h of image n (the compiler vectorises the inner pixel loop). */
static inline void bitfx_pack_row_portable(const bitfx_pack_desc *d, const float *x, uint64_t *out, int64_t n, int64_t h) {
    enum { SPAN = 256 };
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

/* im2col of output pixels p0 .. p0+count−1 of image n, group g: panel[k][i], k = (c, kh, kw). */
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

/* One output row of a float max pool; the column range of each tap is clipped once so the
 * inner loop has no bounds tests. */
static inline void bitfx_fmaxpool_row_portable(const bitfx_fmaxpool_desc *d, const float *x, float *out, int64_t r) {
    const int64_t plane = r / d->out_h, oh = r % d->out_h;
    const float *src = x + plane * d->height * d->width;
    float *dst = out + r * d->out_w;
    for (int64_t ow = 0; ow < d->out_w; ++ow) dst[ow] = -__builtin_inff();
    for (int64_t kh = 0; kh < d->kernel_h; ++kh) {
        const int64_t ih = oh * d->stride_h - d->pad_top + kh * d->dilation_h;
        if (ih < 0 || ih >= d->height) continue;
        const float *row = src + ih * d->width;
        for (int64_t kw = 0; kw < d->kernel_w; ++kw) {
            const int64_t shift = kw * d->dilation_w - d->pad_left;
            int64_t lo = 0, hi = d->out_w;
            while (lo < hi && lo * d->stride_w + shift < 0) ++lo;
            while (hi > lo && (hi - 1) * d->stride_w + shift >= d->width) --hi;
            bitfx_max_strided(dst + lo, row + shift + lo * d->stride_w, hi - lo, d->stride_w);
        }
    }
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
