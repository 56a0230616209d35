/* The AVX2 path: popcount by nibble lookup (vpshufb), byte counts summed with vpsadbw; a tile of
 * up to 4 pixels × 32 channels compiled once per tile size and output kind, its output transform
 * in registers.
 * Every function here is compiled for AVX2+FMA; the dispatcher only calls them on CPUs that
 * have both. */
#if defined(__x86_64__)
#pragma GCC target("avx2,fma,popcnt")
#include <immintrin.h>

#include "output_transform.h"
#include "portable.h"
#include "tile.h"

/* A byte lane gains at most 8 per step, so byte counters are flushed every 31 steps. */
#define FLUSH_STEPS 31

static inline __m256i nibble_count(__m256i v, __m256i lut, __m256i low) {
    const __m256i lo = _mm256_shuffle_epi8(lut, _mm256_and_si256(v, low));
    const __m256i hi = _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(v, 4), low));
    return _mm256_add_epi8(lo, hi);
}

/* Added to a float output kind: the output and residual are channels-last (NHWC). */
#define NHWC 8

/* Float output of a tile's `count` pixels (from q0) × 8 channels from `channel` (lanes from `lane`):
 * y = scale·d + bias (Mul, then Add, as `bitfx_binary_float`), transposed to one NCHW row of
 * pixels per channel (or, with NHWC in `kind`, stored as one vector per pixel: no transpose),
 * residual added, clamped. d is converted through int32, exact for |d| < 2³¹ (the caller checks K). */
static inline __attribute__((always_inline)) void store_float(const bitfx_bconv_job *job, int64_t n, int64_t g, int64_t channel, int64_t lane,
                                                              int64_t q0, int64_t count, const int64_t dots[BITFX_TILE_PIXELS][BITFX_BLOCK],
                                                              int part, const int kind) {
    const bitfx_bconv_desc *d = job->d;
    const int64_t per_group = d->out_channels / d->groups, plane = d->out_h * d->out_w;
    const __m256 s = _mm256_load_ps(job->scale + lane), b = _mm256_load_ps(job->bias + lane);
    const __m256i low_dwords = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
    __m256 y[BITFX_TILE_PIXELS];
    for (int j = 0; j < BITFX_TILE_PIXELS; ++j) {
        const int64_t *dj64 = dots[j < count ? j : count - 1] + part;
        const __m256i a = _mm256_permutevar8x32_epi32(_mm256_loadu_si256((const __m256i *)dj64), low_dwords);
        const __m256i c = _mm256_permutevar8x32_epi32(_mm256_loadu_si256((const __m256i *)(dj64 + 4)), low_dwords);
        const __m256 dj = _mm256_cvtepi32_ps(_mm256_permute2x128_si256(a, c, 0x20));
        y[j] = _mm256_add_ps(_mm256_mul_ps(dj, s), b);
    }
    const int64_t valid = per_group - channel < 8 ? per_group - channel : 8;
    if (kind & NHWC) {
        const __m256i lanes = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)valid), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        const __m256 low = _mm256_set1_ps((float)d->clamp_lo), high = _mm256_set1_ps((float)d->clamp_hi);
        const int64_t first = (n * plane + q0) * d->out_channels + g * per_group + channel;
        const int ahead = plane >= 2048 && channel % 16 == 0; /* the lines two tiles ahead, once per line (as AVX-512) */
        for (int64_t j = 0; j < count; ++j) {
            const int64_t at = first + j * d->out_channels;
            if (ahead) {
                if (BITFX_KIND_RESIDUAL(kind & ~NHWC))
                    _mm_prefetch((const char *)(job->residual + at + 2 * BITFX_TILE_PIXELS * d->out_channels), _MM_HINT_T0);
                _mm_prefetch((const char *)((float *)job->out + at + 2 * BITFX_TILE_PIXELS * d->out_channels), _MM_HINT_T0);
            }
            __m256 row = y[j];
            if (BITFX_KIND_RESIDUAL(kind & ~NHWC)) row = _mm256_add_ps(row, _mm256_maskload_ps(job->residual + at, lanes));
            if (BITFX_KIND_CLAMP(kind & ~NHWC)) row = _mm256_min_ps(_mm256_max_ps(row, low), high);
            _mm256_maskstore_ps((float *)job->out + at, lanes, row);
        }
        return;
    }
    /* 4 pixels × 8 channels → r[c] holds channel c (low half) and c + 4 (high half) of the 4 pixels. */
    const __m256 t0 = _mm256_unpacklo_ps(y[0], y[1]), t1 = _mm256_unpackhi_ps(y[0], y[1]);
    const __m256 t2 = _mm256_unpacklo_ps(y[2], y[3]), t3 = _mm256_unpackhi_ps(y[2], y[3]);
    const __m256 r[4] = {_mm256_shuffle_ps(t0, t2, 0x44), _mm256_shuffle_ps(t0, t2, 0xEE), _mm256_shuffle_ps(t1, t3, 0x44),
                         _mm256_shuffle_ps(t1, t3, 0xEE)};
    const int64_t first = (n * d->out_channels + g * per_group + channel) * plane + q0;
    const __m128i mask = _mm_cmpgt_epi32(_mm_set1_epi32((int)count), _mm_setr_epi32(0, 1, 2, 3));
    const __m128 low = _mm_set1_ps((float)d->clamp_lo), high = _mm_set1_ps((float)d->clamp_hi);
    for (int64_t c = 0; c < valid; ++c) {
        __m128 row = c < 4 ? _mm256_castps256_ps128(r[c]) : _mm256_extractf128_ps(r[c - 4], 1);
        float *out = (float *)job->out + first + c * plane;
        if (BITFX_KIND_RESIDUAL(kind)) row = _mm_add_ps(row, _mm_maskload_ps(job->residual + first + c * plane, mask));
        if (BITFX_KIND_CLAMP(kind)) row = _mm_min_ps(_mm_max_ps(row, low), high);
        _mm_maskstore_ps(out, mask, row);
    }
}

/* Packed output of a tile: bit l of pixel j is (d < threshold) for the block's 32 channels. */
static inline void store_bits(const bitfx_bconv_job *job, int64_t n, int64_t block, int64_t q0, int64_t count,
                              const int64_t dots[BITFX_TILE_PIXELS][BITFX_BLOCK]) {
    const int64_t *threshold = job->threshold + block * BITFX_BLOCK;
    uint32_t bits[BITFX_TILE_PIXELS];
    for (int j = 0; j < count; ++j) {
        bits[j] = 0;
        for (int part = 0; part < BITFX_BLOCK; part += 4) {
            const __m256i less = _mm256_cmpgt_epi64(_mm256_loadu_si256((const __m256i *)(threshold + part)),
                                                    _mm256_loadu_si256((const __m256i *)&dots[j][part]));
            bits[j] |= (uint32_t)_mm256_movemask_pd(_mm256_castsi256_pd(less)) << part;
        }
    }
    bitfx_store_packed_bits(job, n, block, q0, count, bits);
}

static inline __attribute__((always_inline)) void bconv_tile(const bitfx_bconv_job *job, int64_t n, int64_t g, int64_t block, int64_t q0,
                                                             const int P, const int kind) {
    const bitfx_bconv_desc *d = job->d;
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i low = _mm256_set1_epi8(0x0f);
    bitfx_tile tile;
    bitfx_tile_pixels(job, n, g, q0, P, P, &tile);
    const uint64_t *const *px = tile.px;
    const uint64_t *wblock = job->weights + (g * d->blocks + block) * job->k_words * BITFX_BLOCK;
    int64_t dots[BITFX_TILE_PIXELS][BITFX_BLOCK];
    /* 8 channels (two vectors) at a time, so the 8 byte counters and their operands fit in 16 registers. */
    for (int part = 0; part < BITFX_BLOCK; part += 8) {
        __m256i total[BITFX_TILE_PIXELS][2];
        for (int j = 0; j < BITFX_TILE_PIXELS; ++j) total[j][0] = total[j][1] = _mm256_setzero_si256();
        for (int64_t k0 = 0; k0 < job->k_words; k0 += FLUSH_STEPS) {
            const int64_t k1 = k0 + FLUSH_STEPS < job->k_words ? k0 + FLUSH_STEPS : job->k_words;
            __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
            for (int64_t k = k0; k < k1; ++k) {
                const int64_t o = job->offsets[k];
                const uint64_t *w = wblock + k * BITFX_BLOCK + part;
                const __m256i w0 = _mm256_loadu_si256((const __m256i *)w), w1 = _mm256_loadu_si256((const __m256i *)(w + 4));
                __m256i xv = _mm256_set1_epi64x((long long)px[0][o]);
                c00 = _mm256_add_epi8(c00, nibble_count(_mm256_xor_si256(xv, w0), lut, low));
                c01 = _mm256_add_epi8(c01, nibble_count(_mm256_xor_si256(xv, w1), lut, low));
                if (P > 1) {
                    xv = _mm256_set1_epi64x((long long)px[1][o]);
                    c10 = _mm256_add_epi8(c10, nibble_count(_mm256_xor_si256(xv, w0), lut, low));
                    c11 = _mm256_add_epi8(c11, nibble_count(_mm256_xor_si256(xv, w1), lut, low));
                }
                if (P > 2) {
                    xv = _mm256_set1_epi64x((long long)px[2][o]);
                    c20 = _mm256_add_epi8(c20, nibble_count(_mm256_xor_si256(xv, w0), lut, low));
                    c21 = _mm256_add_epi8(c21, nibble_count(_mm256_xor_si256(xv, w1), lut, low));
                }
                if (P > 3) {
                    xv = _mm256_set1_epi64x((long long)px[3][o]);
                    c30 = _mm256_add_epi8(c30, nibble_count(_mm256_xor_si256(xv, w0), lut, low));
                    c31 = _mm256_add_epi8(c31, nibble_count(_mm256_xor_si256(xv, w1), lut, low));
                }
            }
            const __m256i zero = _mm256_setzero_si256();
            total[0][0] = _mm256_add_epi64(total[0][0], _mm256_sad_epu8(c00, zero));
            total[0][1] = _mm256_add_epi64(total[0][1], _mm256_sad_epu8(c01, zero));
            total[1][0] = _mm256_add_epi64(total[1][0], _mm256_sad_epu8(c10, zero));
            total[1][1] = _mm256_add_epi64(total[1][1], _mm256_sad_epu8(c11, zero));
            total[2][0] = _mm256_add_epi64(total[2][0], _mm256_sad_epu8(c20, zero));
            total[2][1] = _mm256_add_epi64(total[2][1], _mm256_sad_epu8(c21, zero));
            total[3][0] = _mm256_add_epi64(total[3][0], _mm256_sad_epu8(c30, zero));
            total[3][1] = _mm256_add_epi64(total[3][1], _mm256_sad_epu8(c31, zero));
        }
        const int64_t lane0 = (g * d->blocks + block) * BITFX_BLOCK + part;
        for (int j = 0; j < P; ++j) {
            const int64_t *kc = job->kc + job->pixels[q0 + j].kc + lane0;
            const __m256i two0 = _mm256_slli_epi64(total[j][0], 1), two1 = _mm256_slli_epi64(total[j][1], 1);
            _mm256_storeu_si256((__m256i *)&dots[j][part], _mm256_sub_epi64(_mm256_loadu_si256((const __m256i *)kc), two0));
            _mm256_storeu_si256((__m256i *)&dots[j][part + 4], _mm256_sub_epi64(_mm256_loadu_si256((const __m256i *)(kc + 4)), two1));
        }
    }
    const int64_t lane0 = (g * d->blocks + block) * BITFX_BLOCK;
    if (kind == BITFX_OUT_KINDS) {
        bitfx_bconv_epilogue(job, n, g, block, q0, P, dots);
        return;
    }
    if (kind == BITFX_OUT_BITS) {
        store_bits(job, n, block, q0, P, dots);
        return;
    }
    for (int part = 0; part < BITFX_BLOCK && block * BITFX_BLOCK + part < d->out_channels / d->groups; part += 8)
        store_float(job, n, g, block * BITFX_BLOCK + part, lane0 + part, q0, P, dots, part, kind);
}

/* Tiles first .. last−1, all of P pixels, with the output kind fixed. */
static inline __attribute__((always_inline)) void tiles_of(const bitfx_bconv_job *job, int64_t n, int64_t g, int64_t block, int64_t first,
                                                           int64_t last, const bitfx_tiling *tiling, const int P, const int kind) {
    for (int64_t t = first; t < last; ++t) bconv_tile(job, n, g, block, bitfx_tile_start(tiling, t), P, kind);
}

static inline __attribute__((always_inline)) void tiles_sized(const bitfx_bconv_job *job, int64_t n, int64_t g, int64_t block, int64_t first,
                                                              int64_t last, const bitfx_tiling *tiling, int64_t size, const int kind) {
    switch (size) {
    case 1: tiles_of(job, n, g, block, first, last, tiling, 1, kind); break;
    case 2: tiles_of(job, n, g, block, first, last, tiling, 2, kind); break;
    case 3: tiles_of(job, n, g, block, first, last, tiling, 3, kind); break;
    default: tiles_of(job, n, g, block, first, last, tiling, 4, kind);
    }
}

/* Tiles first .. last−1 with the output kind fixed; each tile size is a compiled variant. */
static inline __attribute__((always_inline)) void tile_run(const bitfx_bconv_job *job, int64_t n, int64_t g, int64_t block, int64_t first,
                                                           int64_t last, const int kind) {
    const bitfx_tiling tiling = bitfx_tiling_of(job->d->out_h * job->d->out_w, BITFX_TILE_PIXELS);
    const int64_t split = last < tiling.full ? last : tiling.full; /* tiles before `split` have tiling.size pixels */
    if (first < split) tiles_sized(job, n, g, block, first, split, &tiling, tiling.size, kind);
    if (split < last) tiles_sized(job, n, g, block, split > first ? split : first, last, &tiling, tiling.size - 1, kind);
}

static void pack_row(const bitfx_pack_desc *d, const float *x, uint64_t *out, int64_t n, int64_t h) {
    bitfx_pack_row_portable(d, x, out, n, h);
}

static void fconv_chunk(const bitfx_fconv_job *job, float *panel, int64_t n, int64_t g, int64_t p0, int64_t count) {
    const bitfx_fconv_desc *d = job->d;
    bitfx_float_panel_portable(d, job->x, n, g, p0, count, panel);
    const int64_t per_group = d->out_channels / d->groups;
    float acc[BITFX_FLOAT_TILE][BITFX_FLOAT_CHUNK] __attribute__((aligned(32)));
    for (int64_t t = 0; t < d->tiles; ++t) {
        const float *w = job->weights + (g * d->tiles + t) * job->k * BITFX_FLOAT_TILE;
        for (int half = 0; half < BITFX_FLOAT_CHUNK; half += 16) {
            __m256 a00 = _mm256_setzero_ps(), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00, a30 = a00, a31 = a00;
            const float *p = panel + half;
            for (int64_t k = 0; k < job->k; ++k, p += BITFX_FLOAT_CHUNK) {
                const __m256 x0 = _mm256_load_ps(p), x1 = _mm256_load_ps(p + 8);
                const float *wk = w + k * BITFX_FLOAT_TILE;
                __m256 b = _mm256_broadcast_ss(wk);
                a00 = _mm256_fmadd_ps(b, x0, a00);
                a01 = _mm256_fmadd_ps(b, x1, a01);
                b = _mm256_broadcast_ss(wk + 1);
                a10 = _mm256_fmadd_ps(b, x0, a10);
                a11 = _mm256_fmadd_ps(b, x1, a11);
                b = _mm256_broadcast_ss(wk + 2);
                a20 = _mm256_fmadd_ps(b, x0, a20);
                a21 = _mm256_fmadd_ps(b, x1, a21);
                b = _mm256_broadcast_ss(wk + 3);
                a30 = _mm256_fmadd_ps(b, x0, a30);
                a31 = _mm256_fmadd_ps(b, x1, a31);
            }
            _mm256_store_ps(acc[0] + half, a00);
            _mm256_store_ps(acc[0] + half + 8, a01);
            _mm256_store_ps(acc[1] + half, a10);
            _mm256_store_ps(acc[1] + half + 8, a11);
            _mm256_store_ps(acc[2] + half, a20);
            _mm256_store_ps(acc[2] + half + 8, a21);
            _mm256_store_ps(acc[3] + half, a30);
            _mm256_store_ps(acc[3] + half + 8, a31);
        }
        for (int r = 0; r < BITFX_FLOAT_TILE && t * BITFX_FLOAT_TILE + r < per_group; ++r)
            bitfx_float_epilogue(job, acc[r], n, g * per_group + t * BITFX_FLOAT_TILE + r, p0, count);
    }
}

static double popcount_peak(int64_t rounds, uint64_t seed) {
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i low = _mm256_set1_epi8(0x0f), zero = _mm256_setzero_si256();
    const __m256i w0 = _mm256_set_epi64x((long long)seed, (long long)(seed * 3), (long long)(seed * 5), (long long)(seed * 7));
    const __m256i w1 = _mm256_set_epi64x((long long)(seed * 9), (long long)(seed * 11), (long long)(seed * 13), (long long)(seed * 15));
    __m256i x[4], total = zero;
    for (int j = 0; j < 4; ++j) x[j] = _mm256_set1_epi64x((long long)(seed ^ (uint64_t)(j * 0x1234567)));
    for (int64_t r0 = 0; r0 < rounds; r0 += FLUSH_STEPS) {
        __m256i c[8];
        for (int i = 0; i < 8; ++i) c[i] = zero;
        const int64_t r1 = r0 + FLUSH_STEPS < rounds ? r0 + FLUSH_STEPS : rounds;
        for (int64_t r = r0; r < r1; ++r) {
            __asm__ volatile("" : "+x"(x[0]), "+x"(x[1]), "+x"(x[2]), "+x"(x[3]));
            for (int j = 0; j < 4; ++j) {
                c[2 * j] = _mm256_add_epi8(c[2 * j], nibble_count(_mm256_xor_si256(x[j], w0), lut, low));
                c[2 * j + 1] = _mm256_add_epi8(c[2 * j + 1], nibble_count(_mm256_xor_si256(x[j], w1), lut, low));
            }
        }
        for (int i = 0; i < 8; ++i) total = _mm256_add_epi64(total, _mm256_sad_epu8(c[i], zero));
    }
    __asm__ volatile("" : : "x"(total));
    return (double)rounds * 8 * 256;
}

static void fmaxpool_row(const bitfx_fmaxpool_desc *d, const float *x, float *out, int64_t r) { bitfx_fmaxpool_row_portable(d, x, out, r); }

static void fgemm_columns(const bitfx_fgemm_desc *d, const float *x, const float *w, const float *bias, float *out, int64_t c0, int64_t c1) {
    bitfx_fgemm_columns_portable(d, x, w, bias, out, c0, c1);
}

/* The tile loop, compiled once per output kind and float layout; a reduction of 2³¹ bits or more (|d| may
 * not fit the int32 conversion of store_float) takes the portable output transform. */
static void bconv_tiles(const bitfx_bconv_job *job, int64_t n, int64_t g, int64_t block, int64_t first, int64_t last) {
    const int nhwc = job->d->channels_last && job->d->out_mode == BITFX_OUT_FLOAT;
    switch (job->k_words < (1ll << 25) ? bitfx_out_kind(job->d) + (nhwc ? NHWC : 0) : BITFX_OUT_KINDS) {
    case BITFX_OUT_BITS: tile_run(job, n, g, block, first, last, BITFX_OUT_BITS); break;
    case BITFX_OUT_F: tile_run(job, n, g, block, first, last, BITFX_OUT_F); break;
    case BITFX_OUT_F_RESIDUAL: tile_run(job, n, g, block, first, last, BITFX_OUT_F_RESIDUAL); break;
    case BITFX_OUT_F_CLAMP: tile_run(job, n, g, block, first, last, BITFX_OUT_F_CLAMP); break;
    case BITFX_OUT_F_RESIDUAL_CLAMP: tile_run(job, n, g, block, first, last, BITFX_OUT_F_RESIDUAL_CLAMP); break;
    case BITFX_OUT_F + NHWC: tile_run(job, n, g, block, first, last, BITFX_OUT_F + NHWC); break;
    case BITFX_OUT_F_RESIDUAL + NHWC: tile_run(job, n, g, block, first, last, BITFX_OUT_F_RESIDUAL + NHWC); break;
    case BITFX_OUT_F_CLAMP + NHWC: tile_run(job, n, g, block, first, last, BITFX_OUT_F_CLAMP + NHWC); break;
    case BITFX_OUT_F_RESIDUAL_CLAMP + NHWC: tile_run(job, n, g, block, first, last, BITFX_OUT_F_RESIDUAL_CLAMP + NHWC); break;
    default: tile_run(job, n, g, block, first, last, BITFX_OUT_KINDS);
    }
}

const bitfx_isa_ops bitfx_ops_avx2 = {pack_row, BITFX_TILE_PIXELS, bconv_tiles, fconv_chunk, bitfx_fconv_row_avx2, popcount_peak, fmaxpool_row,
                                      fgemm_columns, 1};
#endif
