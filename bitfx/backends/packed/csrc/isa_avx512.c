/* The AVX-512 path: VPOPCNTQ on 8 output channels per vector, a register tile of up to 8 pixels ×
 * 16 channels (16 accumulators, twice per 32-channel block; code specialised per tile size and
 * output kind), and the output transform done in registers (8×8 transposes for NCHW float rows, one
 * 16-channel vector per pixel for NHWC, compare masks for packed bits). Every function here is
 * compiled for AVX-512 (F, VL, BW, DQ, VPOPCNTDQ); the dispatcher only calls them on CPUs that
 * have all of these. */
#if defined(__x86_64__)
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,avx512vpopcntdq,fma,popcnt")
#include <immintrin.h>

#include "avx512_transpose.h"
#include "output_transform.h"
#include "portable.h"
#include "tile.h"

#define XPOP(acc, xv, wv) acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(_mm512_xor_si512(xv, wv)))
#define PIXEL_STEP(j)                                                     \
    do {                                                                  \
        if ((j) < P) {                                                    \
            const __m512i xv = _mm512_set1_epi64((long long)px[j][o]);    \
            XPOP(lo##j, xv, w0);                                          \
            XPOP(hi##j, xv, w1);                                          \
        }                                                                 \
    } while (0)
#define TILE 8 /* output pixels per tile, at most */

/* Transposes 8 pixels × 8 channels (one vector per pixel) into 8 rows of 8 pixels, one per channel. */
static inline void transpose8(const __m256 y[8], __m256 rows[8]) {
    __m256 t[8], u[8];
    for (int i = 0; i < 4; ++i) {
        t[2 * i] = _mm256_unpacklo_ps(y[2 * i], y[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(y[2 * i], y[2 * i + 1]);
    }
    for (int i = 0; i < 2; ++i) {
        u[4 * i] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
        u[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
        u[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
        u[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
    }
    for (int c = 0; c < 4; ++c) {
        rows[c] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x20);
        rows[4 + c] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x31);
    }
}

/* One channel's row of P output pixels: residual added, clamped, stored (P contiguous floats). */
static inline __attribute__((always_inline)) void store_row(float *out, const float *residual, __m256 r, __m256 low, __m256 high,
                                                            __mmask8 mask, const int P, const int kind) {
    if (BITFX_KIND_RESIDUAL(kind))
        r = _mm256_add_ps(r, P == TILE ? _mm256_loadu_ps(residual) : _mm256_maskz_loadu_ps(mask, residual));
    if (BITFX_KIND_CLAMP(kind)) r = _mm256_min_ps(_mm256_max_ps(r, low), high);
    if (P == TILE)
        _mm256_storeu_ps(out, r);
    else
        _mm256_mask_storeu_ps(out, mask, r);
}

/* Float output of P consecutive pixels (from q0) × 8 channels starting at channel `channel` of
 * group g: y = scale·d + bias (Mul, then Add, as `bitfx_binary_float` in output_transform.h),
 * transposed to one NCHW row per channel (P contiguous floats), residual added, clamped. */
static inline __attribute__((always_inline)) void store_float(const bitfx_bconv_job *job, int64_t n, int64_t g, int64_t channel, int64_t lane,
                                                              int64_t q0, const __m512i d[TILE], const int P, const int kind) {
    const bitfx_bconv_desc *d_ = job->d;
    const int64_t per_group = d_->out_channels / d_->groups, plane = d_->out_h * d_->out_w;
    const __m256 s = _mm256_load_ps(job->scale + lane), b = _mm256_load_ps(job->bias + lane);
    __m256 y[TILE], rows[8];
    for (int j = 0; j < TILE; ++j) y[j] = _mm256_add_ps(_mm256_mul_ps(_mm512_cvtepi64_ps(d[j < P ? j : P - 1]), s), b);
    transpose8(y, rows);
    const int64_t valid = per_group - channel < 8 ? per_group - channel : 8;
    const int64_t first = (n * d_->out_channels + g * per_group + channel) * plane + q0;
    float *out = (float *)job->out + first;
    const float *residual = job->residual + first;
    const __m256 low = _mm256_set1_ps((float)d_->clamp_lo), high = _mm256_set1_ps((float)d_->clamp_hi);
    const __mmask8 mask = (__mmask8)((1u << P) - 1);
    const int large = plane >= 2048; /* measured: helps 56×56 planes, costs 2–3% on 28×28 and smaller */
    if (valid == 8) { /* every block but a group's last when its channels are not a multiple of 8: unrolled */
        for (int c = 0; c < 8; ++c) {
            if (large) { /* the lines two tiles ahead of 8 rows far apart, which the hardware does not fetch in time */
                if (BITFX_KIND_RESIDUAL(kind)) _mm_prefetch((const char *)(residual + c * plane + 32), _MM_HINT_T0);
                _mm_prefetch((const char *)(out + c * plane + 32), _MM_HINT_ET0);
            }
            store_row(out + c * plane, residual + c * plane, rows[c], low, high, mask, P, kind);
        }
        return;
    }
    for (int64_t c = 0; c < valid; ++c) store_row(out + c * plane, residual + c * plane, rows[c], low, high, mask, P, kind);
}

/* Float output of P consecutive pixels (from q0) × the 16 channels from `channel` of group g (lanes
 * from `lane`; `lo` holds channels 0–7 of each pixel, `hi` 8–15), NHWC: one vector per pixel, stored
 * where that pixel's channels are contiguous (no transpose); y = scale·d + bias (Mul, then Add),
 * residual added, clamped. */
static inline __attribute__((always_inline)) void store_pixels(const bitfx_bconv_job *job, int64_t n, int64_t g, int64_t channel,
                                                               int64_t lane, int64_t q0, const __m512i lo[TILE], const __m512i hi[TILE],
                                                               const int P, const int kind) {
    const bitfx_bconv_desc *d_ = job->d;
    const int64_t per_group = d_->out_channels / d_->groups, valid = per_group - channel < 16 ? per_group - channel : 16;
    if (valid <= 0) return;
    const __mmask16 mask = (__mmask16)(valid == 16 ? 0xffffu : (1u << valid) - 1);
    const __m512 s = _mm512_load_ps(job->scale + lane), b = _mm512_load_ps(job->bias + lane);
    const __m512 low = _mm512_set1_ps((float)d_->clamp_lo), high = _mm512_set1_ps((float)d_->clamp_hi);
    const int64_t stride = d_->out_channels, first = (n * d_->out_h * d_->out_w + q0) * stride + g * per_group + channel;
    float *out = (float *)job->out + first;
    const float *residual = job->residual + first;
    const int large = d_->out_h * d_->out_w >= 2048; /* as store_float: the lines two tiles ahead */
    for (int j = 0; j < P; ++j) {
        if (large) {
            if (BITFX_KIND_RESIDUAL(kind)) _mm_prefetch((const char *)(residual + (j + 2 * TILE) * stride), _MM_HINT_T0);
            _mm_prefetch((const char *)(out + (j + 2 * TILE) * stride), _MM_HINT_ET0);
        }
        const __m512 dj = _mm512_insertf32x8(_mm512_castps256_ps512(_mm512_cvtepi64_ps(lo[j])), _mm512_cvtepi64_ps(hi[j]), 1);
        __m512 y = _mm512_add_ps(_mm512_mul_ps(dj, s), b);
        if (BITFX_KIND_RESIDUAL(kind)) y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(mask, residual + j * stride));
        if (BITFX_KIND_CLAMP(kind)) y = _mm512_min_ps(_mm512_max_ps(y, low), high);
        _mm512_mask_storeu_ps(out + j * stride, mask, y);
    }
}

/* One tile: P output pixels (from q0) × the 32 channels of a block, as two halves of 16 channels
 * with 2·P accumulators each (P pixels × 2 vectors of 8 channels). Input pointers and border
 * corrections come from the pixel table (one path for interior and border pixels). */
static inline __attribute__((always_inline)) void bconv_tile(const bitfx_bconv_job *job, int64_t n, int64_t g, int64_t block, int64_t q0,
                                                             const int P, const int kind, const int nhwc) {
    const bitfx_bconv_desc *d = job->d;
    const bitfx_bconv_pixel *pixel = job->pixels + q0;
    const uint64_t *image = job->x + n * job->image_words + g * d->group_words;
    const int64_t lane0 = (g * d->blocks + block) * BITFX_BLOCK;
    const uint64_t *px[TILE];
    const int64_t *kc[TILE];
    for (int j = 0; j < P; ++j) px[j] = image + pixel[j].in, kc[j] = job->kc + pixel[j].kc + lane0;
    const int64_t *offsets = job->offsets, k_words = job->k_words;
    uint32_t bits[TILE] = {0};
    for (int half = 0; half < 2; ++half) {
        const uint64_t *w = job->weights + (g * d->blocks + block) * k_words * BITFX_BLOCK + 16 * half;
        __m512i lo0 = _mm512_setzero_si512(), lo1 = lo0, lo2 = lo0, lo3 = lo0, lo4 = lo0, lo5 = lo0, lo6 = lo0, lo7 = lo0;
        __m512i hi0 = lo0, hi1 = lo0, hi2 = lo0, hi3 = lo0, hi4 = lo0, hi5 = lo0, hi6 = lo0, hi7 = lo0;
        for (int64_t k = 0; k < k_words; ++k, w += BITFX_BLOCK) {
            const int64_t o = offsets[k];
            const __m512i w0 = _mm512_load_si512(w), w1 = _mm512_load_si512(w + 8);
            PIXEL_STEP(0); PIXEL_STEP(1); PIXEL_STEP(2); PIXEL_STEP(3);
            PIXEL_STEP(4); PIXEL_STEP(5); PIXEL_STEP(6); PIXEL_STEP(7);
        }
        __m512i lo[TILE] = {lo0, lo1, lo2, lo3, lo4, lo5, lo6, lo7}, hi[TILE] = {hi0, hi1, hi2, hi3, hi4, hi5, hi6, hi7};
        const int64_t lane = lane0 + 16 * half;
        for (int j = 0; j < P; ++j) { /* d = (K − correction) − 2·popcount */
            lo[j] = _mm512_sub_epi64(_mm512_load_si512(kc[j] + 16 * half), _mm512_slli_epi64(lo[j], 1));
            hi[j] = _mm512_sub_epi64(_mm512_load_si512(kc[j] + 16 * half + 8), _mm512_slli_epi64(hi[j], 1));
        }
        if (kind == BITFX_OUT_BITS) {
            const __m512i t0 = _mm512_load_si512(job->threshold + lane), t1 = _mm512_load_si512(job->threshold + lane + 8);
            for (int j = 0; j < P; ++j)
                bits[j] |= ((uint32_t)_mm512_cmplt_epi64_mask(lo[j], t0) | (uint32_t)_mm512_cmplt_epi64_mask(hi[j], t1) << 8) << (16 * half);
            continue;
        }
        if (nhwc) {
            store_pixels(job, n, g, block * BITFX_BLOCK + 16 * half, lane, q0, lo, hi, P, kind);
            continue;
        }
        store_float(job, n, g, block * BITFX_BLOCK + 16 * half, lane, q0, lo, P, kind);
        store_float(job, n, g, block * BITFX_BLOCK + 16 * half + 8, lane + 8, q0, hi, P, kind);
    }
    if (kind == BITFX_OUT_BITS) bitfx_store_packed_bits(job, n, block, q0, P, bits);
}

/* Tiles first .. last−1 of P pixels each: the tile loop, specialised per tile size, output kind and
 * float layout (NCHW, or NHWC when `nhwc`). While a block's tiles run, the weights of the next block
 * are prefetched, a share per tile. */
typedef void (*tile_run)(const bitfx_bconv_job *job, int64_t n, int64_t g, int64_t block, int64_t first, int64_t last,
                         const bitfx_tiling *tiling);
#define TILE_RUN(P, kind, nhwc)                                                                                                  \
    static void tiles_##P##_##kind##_##nhwc(const bitfx_bconv_job *job, int64_t n, int64_t g, int64_t block, int64_t first,      \
                                            int64_t last, const bitfx_tiling *tiling) {                                          \
        const int64_t block_words = job->k_words * BITFX_BLOCK, next = g * job->d->blocks + block + 1;                          \
        const char *ahead = (const char *)(job->weights + next * block_words);                                                  \
        const int64_t lines = next < job->d->groups * job->d->blocks ? block_words / 8 : 0;                                     \
        const int64_t per_tile = (lines + last - first - 1) / (last - first > 0 ? last - first : 1);                           \
        for (int64_t t = first, line = 0; t < last; ++t) {                                                                      \
            for (int64_t end = line + per_tile < lines ? line + per_tile : lines; line < end; ++line)                            \
                _mm_prefetch(ahead + 64 * line, _MM_HINT_T0);                                                                    \
            bconv_tile(job, n, g, block, bitfx_tile_start(tiling, t), P, kind, nhwc);                                           \
        }                                                                                                                        \
    }
#define TILE_RUNS(kind, nhwc)                                                                                                  \
    TILE_RUN(1, kind, nhwc) TILE_RUN(2, kind, nhwc) TILE_RUN(3, kind, nhwc) TILE_RUN(4, kind, nhwc) TILE_RUN(5, kind, nhwc) \
        TILE_RUN(6, kind, nhwc) TILE_RUN(7, kind, nhwc) TILE_RUN(8, kind, nhwc)
TILE_RUNS(BITFX_OUT_BITS, 0)
TILE_RUNS(BITFX_OUT_F, 0)
TILE_RUNS(BITFX_OUT_F_RESIDUAL, 0)
TILE_RUNS(BITFX_OUT_F_CLAMP, 0)
TILE_RUNS(BITFX_OUT_F_RESIDUAL_CLAMP, 0)
TILE_RUNS(BITFX_OUT_F, 1)
TILE_RUNS(BITFX_OUT_F_RESIDUAL, 1)
TILE_RUNS(BITFX_OUT_F_CLAMP, 1)
TILE_RUNS(BITFX_OUT_F_RESIDUAL_CLAMP, 1)
#define TILE_SIZES(kind, nhwc)                                                                                              \
    {0,                     tiles_1_##kind##_##nhwc, tiles_2_##kind##_##nhwc, tiles_3_##kind##_##nhwc, tiles_4_##kind##_##nhwc, \
     tiles_5_##kind##_##nhwc, tiles_6_##kind##_##nhwc, tiles_7_##kind##_##nhwc, tiles_8_##kind##_##nhwc}
/* [float layout][output kind][tile size]; packed bits have one layout. */
static const tile_run tile_runs[2][BITFX_OUT_KINDS][TILE + 1] = {
    {TILE_SIZES(BITFX_OUT_BITS, 0), TILE_SIZES(BITFX_OUT_F, 0), TILE_SIZES(BITFX_OUT_F_RESIDUAL, 0), TILE_SIZES(BITFX_OUT_F_CLAMP, 0),
     TILE_SIZES(BITFX_OUT_F_RESIDUAL_CLAMP, 0)},
    {TILE_SIZES(BITFX_OUT_BITS, 0), TILE_SIZES(BITFX_OUT_F, 1), TILE_SIZES(BITFX_OUT_F_RESIDUAL, 1), TILE_SIZES(BITFX_OUT_F_CLAMP, 1),
     TILE_SIZES(BITFX_OUT_F_RESIDUAL_CLAMP, 1)}};

static void bconv_tiles(const bitfx_bconv_job *job, int64_t n, int64_t g, int64_t block, int64_t first, int64_t last) {
    const bitfx_tiling tiling = bitfx_tiling_of(job->d->out_h * job->d->out_w, TILE);
    const int kind = bitfx_out_kind(job->d), nhwc = job->d->channels_last != 0;
    const int64_t split = last < tiling.full ? last : tiling.full; /* tiles before `split` have tiling.size pixels */
    if (first < split) tile_runs[nhwc][kind][tiling.size](job, n, g, block, first, split, &tiling);
    if (split < last) tile_runs[nhwc][kind][tiling.size - 1](job, n, g, block, split > first ? split : first, last, &tiling);
}

static void pack_row(const bitfx_pack_desc *d, const float *x, uint64_t *out, int64_t n, int64_t h) {
    if (d->channels_last) { /* four 16-float compares per word (bitfx_sign_bits) */
        bitfx_pack_row_nhwc(d, x, out, n, h);
        return;
    }
    const bitfx_packed_geom *geom = &d->out;
    const int64_t width = geom->width, height = geom->height, per_group = d->channels / d->groups;
    uint64_t *row = out + ((n * bitfx_padded_h(geom) + geom->pad_top + h) * bitfx_padded_w(geom) + geom->pad_left) * geom->words;
    const __m512 zero = _mm512_setzero_ps();
    for (int64_t group = 0; group < d->groups; ++group) {
        for (int64_t word = 0; word < d->group_words; ++word) {
            const int64_t c0 = group * per_group + word * 64;
            const int64_t c1 = c0 + 64 < (group + 1) * per_group ? c0 + 64 : (group + 1) * per_group;
            const int64_t slot = group * d->group_words + word;
            const float *plane0 = x + ((n * d->channels + c0) * height + h) * width;
            for (int64_t w0 = 0; w0 < width; w0 += 16) {
                const int64_t span = width - w0 < 16 ? width - w0 : 16;
                const __mmask16 valid = (__mmask16)((1u << span) - 1);
                __m512i lo = _mm512_setzero_si512(), hi = lo, bit = _mm512_set1_epi64(1);
                const float *src = plane0 + w0;
                for (int64_t c = c0; c < c1; ++c, src += height * width) {
                    const __mmask16 negative = _mm512_cmp_ps_mask(_mm512_maskz_loadu_ps(valid, src), zero, _CMP_LT_OQ);
                    lo = _mm512_mask_or_epi64(lo, (__mmask8)negative, lo, bit);
                    hi = _mm512_mask_or_epi64(hi, (__mmask8)(negative >> 8), hi, bit);
                    bit = _mm512_add_epi64(bit, bit);
                }
                if (geom->words == 1) {
                    _mm512_mask_storeu_epi64(row + w0, (__mmask8)valid, lo);
                    _mm512_mask_storeu_epi64(row + w0 + 8, (__mmask8)(valid >> 8), hi);
                } else {
                    uint64_t bits[16];
                    _mm512_storeu_si512(bits, lo);
                    _mm512_storeu_si512(bits + 8, hi);
                    for (int64_t i = 0; i < span; ++i) row[(w0 + i) * geom->words + slot] = bits[i];
                }
            }
        }
    }
}

static void fconv_chunk(const bitfx_fconv_job *job, float *panel, int64_t n, int64_t g, int64_t p0, int64_t count) {
    const bitfx_fconv_desc *d = job->d;
    bitfx_float_panel_portable(d, job->x, n, g, p0, count, panel);
    const int64_t per_group = d->out_channels / d->groups;
    float acc[BITFX_FLOAT_TILE][BITFX_FLOAT_CHUNK] __attribute__((aligned(64)));
    for (int64_t t = 0; t < d->tiles; ++t) {
        const float *w = job->weights + (g * d->tiles + t) * job->k * BITFX_FLOAT_TILE;
        __m512 a00 = _mm512_setzero_ps(), a01 = a00, a02 = a00, a03 = a00, a10 = a00, a11 = a00, a12 = a00, a13 = a00;
        __m512 a20 = a00, a21 = a00, a22 = a00, a23 = a00, a30 = a00, a31 = a00, a32 = a00, a33 = a00;
        const float *p = panel;
        for (int64_t k = 0; k < job->k; ++k, p += BITFX_FLOAT_CHUNK, w += BITFX_FLOAT_TILE) {
            const __m512 x0 = _mm512_load_ps(p), x1 = _mm512_load_ps(p + 16), x2 = _mm512_load_ps(p + 32), x3 = _mm512_load_ps(p + 48);
            __m512 b = _mm512_set1_ps(w[0]);
            a00 = _mm512_fmadd_ps(b, x0, a00), a01 = _mm512_fmadd_ps(b, x1, a01), a02 = _mm512_fmadd_ps(b, x2, a02), a03 = _mm512_fmadd_ps(b, x3, a03);
            b = _mm512_set1_ps(w[1]);
            a10 = _mm512_fmadd_ps(b, x0, a10), a11 = _mm512_fmadd_ps(b, x1, a11), a12 = _mm512_fmadd_ps(b, x2, a12), a13 = _mm512_fmadd_ps(b, x3, a13);
            b = _mm512_set1_ps(w[2]);
            a20 = _mm512_fmadd_ps(b, x0, a20), a21 = _mm512_fmadd_ps(b, x1, a21), a22 = _mm512_fmadd_ps(b, x2, a22), a23 = _mm512_fmadd_ps(b, x3, a23);
            b = _mm512_set1_ps(w[3]);
            a30 = _mm512_fmadd_ps(b, x0, a30), a31 = _mm512_fmadd_ps(b, x1, a31), a32 = _mm512_fmadd_ps(b, x2, a32), a33 = _mm512_fmadd_ps(b, x3, a33);
        }
        _mm512_store_ps(acc[0], a00), _mm512_store_ps(acc[0] + 16, a01), _mm512_store_ps(acc[0] + 32, a02), _mm512_store_ps(acc[0] + 48, a03);
        _mm512_store_ps(acc[1], a10), _mm512_store_ps(acc[1] + 16, a11), _mm512_store_ps(acc[1] + 32, a12), _mm512_store_ps(acc[1] + 48, a13);
        _mm512_store_ps(acc[2], a20), _mm512_store_ps(acc[2] + 16, a21), _mm512_store_ps(acc[2] + 32, a22), _mm512_store_ps(acc[2] + 48, a23);
        _mm512_store_ps(acc[3], a30), _mm512_store_ps(acc[3] + 16, a31), _mm512_store_ps(acc[3] + 32, a32), _mm512_store_ps(acc[3] + 48, a33);
        for (int r = 0; r < BITFX_FLOAT_TILE && t * BITFX_FLOAT_TILE + r < per_group; ++r)
            bitfx_float_epilogue(job, acc[r], n, g * per_group + t * BITFX_FLOAT_TILE + r, p0, count);
    }
}

/* Direct float convolution (group 1), the fast path for convolutions with few input channels such
 * as a network's stem: 64 output channels are 4 vectors and a register tile is 6 output pixels of a
 * row × those 64 channels (24 accumulators; per tap 4 weight loads and 6 broadcasts for 24 FMAs, no
 * im2col). Taps are summed in (c, kh, kw) order as in fconv_chunk; taps on the zero border are
 * skipped (they add ±0). Tiles go to `stage` pixel-major (one 64-float vector row per pixel), are
 * transposed 16 × 16 into channel rows, and the shared epilogue writes the NCHW output row; for the
 * fused stem's pixel-major stage (bitfx_fconv_job.stage_pixels) they go through that epilogue in
 * registers (bitfx_pixel_end_apply) into the stage row instead, untransposed. */
#define DIRECT_PIXELS 6

/* Pixel `pixel` (64 floats): its sums, through `end` when it is not null. */
static inline void direct_store(float *pixel, __m512 a0, __m512 a1, __m512 a2, __m512 a3, const bitfx_pixel_end *end) {
    const __m512 acc[4] = {a0, a1, a2, a3};
    for (int v = 0; v < 4; ++v) _mm512_store_ps(pixel + 16 * v, end ? bitfx_pixel_end_apply(end, v, acc[v]) : acc[v]);
}

/* One output pixel with bounds checks on every tap (image edges and leftover pixels). */
static void direct_pixel(const bitfx_fconv_desc *d, const float *image, const float *w, int64_t oh, int64_t ow, float *pixel,
                         const bitfx_pixel_end *end) {
    __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    const int64_t taps = d->kernel_h * d->kernel_w;
    for (int64_t c = 0; c < d->channels; ++c) {
        for (int64_t kh = 0; kh < d->kernel_h; ++kh) {
            const int64_t ih = oh * d->stride_h - d->pad_top + kh * d->dilation_h;
            if (ih < 0 || ih >= d->height) continue;
            for (int64_t kw = 0; kw < d->kernel_w; ++kw) {
                const int64_t iw = ow * d->stride_w - d->pad_left + kw * d->dilation_w;
                if (iw < 0 || iw >= d->width) continue;
                const float *wk = w + (c * taps + kh * d->kernel_w + kw) * 64;
                const __m512 b = _mm512_set1_ps(image[(c * d->height + ih) * d->width + iw]);
                for (int v = 0; v < 4; ++v) acc[v] = _mm512_fmadd_ps(b, _mm512_load_ps(wk + 16 * v), acc[v]);
            }
        }
    }
    direct_store(pixel, acc[0], acc[1], acc[2], acc[3], end);
}

#define DIRECT_STEP(j)                                  \
    do {                                                \
        const __m512 b = _mm512_set1_ps(src[(j) * sw]); \
        a##j##0 = _mm512_fmadd_ps(b, w0, a##j##0);      \
        a##j##1 = _mm512_fmadd_ps(b, w1, a##j##1);      \
        a##j##2 = _mm512_fmadd_ps(b, w2, a##j##2);      \
        a##j##3 = _mm512_fmadd_ps(b, w3, a##j##3);      \
    } while (0)
#define DIRECT_STORE(j) direct_store(tiles + (ow0 + (j)) * 64, a##j##0, a##j##1, a##j##2, a##j##3, end)

static void fconv_row(const bitfx_fconv_job *job, const float *block_weights, float *stage, int64_t n, int64_t oh, int64_t block) {
    const bitfx_fconv_desc *d = job->d;
    const int64_t sw = d->stride_w, dw = d->dilation_w, taps = d->kernel_h * d->kernel_w;
    const float *image = job->x + n * d->channels * d->height * d->width;
    const float *w = block_weights + block * job->k * 64;
    const bitfx_pixel_end fused = job->stage_pixels ? bitfx_pixel_end_of(job, block) : (bitfx_pixel_end){0};
    const bitfx_pixel_end *end = job->stage_pixels ? &fused : 0;
    float *tiles = /* pixel-major: the row's tiles, or the fused stem's stage row */
        job->stage_pixels ? job->stage_out + (oh - job->stage_row0) * d->out_w * 64 : stage;
    /* Columns whose every tap is inside the image, and rows of taps inside it. */
    int64_t lo = 0, hi = d->out_w, kh0 = 0, kh1 = d->kernel_h;
    while (lo < hi && lo * sw - d->pad_left < 0) ++lo;
    while (hi > lo && (hi - 1) * sw - d->pad_left + (d->kernel_w - 1) * dw >= d->width) --hi;
    while (kh0 < kh1 && oh * d->stride_h - d->pad_top + kh0 * d->dilation_h < 0) ++kh0;
    while (kh1 > kh0 && oh * d->stride_h - d->pad_top + (kh1 - 1) * d->dilation_h >= d->height) --kh1;
    for (int64_t ow = 0; ow < lo; ++ow) direct_pixel(d, image, w, oh, ow, tiles + ow * 64, end);
    int64_t ow0 = lo;
    for (; ow0 + DIRECT_PIXELS <= hi; ow0 += DIRECT_PIXELS) {
        __m512 a00 = _mm512_setzero_ps(), a01 = a00, a02 = a00, a03 = a00, a10 = a00, a11 = a00, a12 = a00, a13 = a00;
        __m512 a20 = a00, a21 = a00, a22 = a00, a23 = a00, a30 = a00, a31 = a00, a32 = a00, a33 = a00;
        __m512 a40 = a00, a41 = a00, a42 = a00, a43 = a00, a50 = a00, a51 = a00, a52 = a00, a53 = a00;
        const float *column = image + ow0 * sw - d->pad_left;
        for (int64_t c = 0; c < d->channels; ++c) {
            for (int64_t kh = kh0; kh < kh1; ++kh) {
                const int64_t ih = oh * d->stride_h - d->pad_top + kh * d->dilation_h;
                const float *row = column + (c * d->height + ih) * d->width;
                const float *wk = w + (c * taps + kh * d->kernel_w) * 64;
                for (int64_t kw = 0; kw < d->kernel_w; ++kw, wk += 64) {
                    const float *src = row + kw * dw;
                    const __m512 w0 = _mm512_load_ps(wk), w1 = _mm512_load_ps(wk + 16), w2 = _mm512_load_ps(wk + 32);
                    const __m512 w3 = _mm512_load_ps(wk + 48);
                    DIRECT_STEP(0); DIRECT_STEP(1); DIRECT_STEP(2); DIRECT_STEP(3); DIRECT_STEP(4); DIRECT_STEP(5);
                }
            }
        }
        DIRECT_STORE(0); DIRECT_STORE(1); DIRECT_STORE(2); DIRECT_STORE(3); DIRECT_STORE(4); DIRECT_STORE(5);
    }
    for (int64_t ow = ow0; ow < d->out_w; ++ow) direct_pixel(d, image, w, oh, ow, tiles + ow * 64, end);
    if (!end) bitfx_direct_row_epilogue(job, stage, n, oh, block);
}

static double popcount_peak(int64_t rounds, uint64_t seed) {
    const __m512i w0 = _mm512_set1_epi64((long long)seed), w1 = _mm512_set1_epi64((long long)(seed * 3));
    const __m512i w2 = _mm512_set1_epi64((long long)(seed * 5)), w3 = _mm512_set1_epi64((long long)(seed * 7));
    __m512i x0 = _mm512_set1_epi64((long long)(seed ^ 0x5555)), x1 = _mm512_set1_epi64((long long)(seed ^ 0x3333));
    __m512i x2 = _mm512_set1_epi64((long long)(seed ^ 0x0f0f));
    __m512i a00 = _mm512_setzero_si512(), a01 = a00, a02 = a00, a03 = a00, a10 = a00, a11 = a00, a12 = a00, a13 = a00;
    __m512i a20 = a00, a21 = a00, a22 = a00, a23 = a00;
    for (int64_t r = 0; r < rounds; ++r) {
        __asm__ volatile("" : "+v"(x0), "+v"(x1), "+v"(x2));
        XPOP(a00, x0, w0), XPOP(a01, x0, w1), XPOP(a02, x0, w2), XPOP(a03, x0, w3);
        XPOP(a10, x1, w0), XPOP(a11, x1, w1), XPOP(a12, x1, w2), XPOP(a13, x1, w3);
        XPOP(a20, x2, w0), XPOP(a21, x2, w1), XPOP(a22, x2, w2), XPOP(a23, x2, w3);
    }
    __m512i sum = _mm512_add_epi64(_mm512_add_epi64(_mm512_add_epi64(a00, a01), _mm512_add_epi64(a02, a03)),
                                   _mm512_add_epi64(_mm512_add_epi64(a10, a11), _mm512_add_epi64(a12, a13)));
    sum = _mm512_add_epi64(sum, _mm512_add_epi64(_mm512_add_epi64(a20, a21), _mm512_add_epi64(a22, a23)));
    __asm__ volatile("" : : "v"(sum));
    return (double)rounds * 12 * 512;
}

static void fmaxpool_row(const bitfx_fmaxpool_desc *d, const float *x, float *out, int64_t r) { bitfx_fmaxpool_row_portable(d, x, out, r); }

static void fgemm_columns(const bitfx_fgemm_desc *d, const float *x, const float *w, const float *bias, float *out, int64_t c0, int64_t c1) {
    bitfx_fgemm_columns_portable(d, x, w, bias, out, c0, c1);
}

const bitfx_isa_ops bitfx_ops_avx512 = {pack_row, TILE, bconv_tiles, fconv_chunk, fconv_row, popcount_peak, fmaxpool_row, fgemm_columns, 1};
#endif
