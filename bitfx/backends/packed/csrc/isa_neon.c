/* The AArch64 NEON path: popcount with vcntq_u8 (a bit count per byte), byte counts summed with
 * widening pairwise adds (vpaddlq_u8, vpadalq_u16, vpaddlq_u32); a tile of up to 4 pixels × 32
 * channels compiled once per tile size, its dot products handed to the shared output transform
 * (bitfx_bconv_epilogue). The float convolution's chunk uses FMA intrinsics; packing, float max pool
 * and Gemm are the portable loops, which the compiler vectorises for NEON. AdvSIMD is part of every
 * AArch64 CPU, so the dispatcher selects this path on any of them. */
#if defined(__aarch64__)
#include <arm_neon.h>

#include "output_transform.h"
#include "portable.h"
#include "tile.h"

/* A byte lane gains at most 8 per step, so byte counters are flushed every 31 steps. */
#define FLUSH_STEPS 31
/* Channels per pass over the reduction: 4 vectors of 2 channels, so 4 pixels' counters fit in registers. */
#define PART 8

/* Byte counters of 2 channels (one vector) widened into their 32-bit totals. */
static inline uint32x4_t flush(uint32x4_t total, uint8x16_t counts) { return vpadalq_u16(total, vpaddlq_u8(counts)); }

/* Tile of P pixels from q0 × the 32 channels of `block` (group g, image n): exact dot products, then
 * the shared output transform. */
static inline __attribute__((always_inline)) void bconv_tile_of(const bitfx_bconv_job *job, int64_t n, int64_t g, int64_t block,
                                                                int64_t q0, const int P) {
    const bitfx_bconv_desc *d = job->d;
    bitfx_tile tile;
    bitfx_tile_pixels(job, n, g, q0, P, P, &tile);
    const uint64_t *const *px = tile.px;
    const uint64_t *wblock = job->weights + (g * d->blocks + block) * job->k_words * BITFX_BLOCK;
    const int64_t lane0 = (g * d->blocks + block) * BITFX_BLOCK;
    int64_t dots[BITFX_TILE_PIXELS][BITFX_BLOCK];
    for (int part = 0; part < BITFX_BLOCK; part += PART) {
        uint32x4_t total[BITFX_TILE_PIXELS][PART / 2];
        for (int j = 0; j < P; ++j)
            for (int v = 0; v < PART / 2; ++v) total[j][v] = vdupq_n_u32(0);
        for (int64_t k0 = 0; k0 < job->k_words; k0 += FLUSH_STEPS) {
            const int64_t k1 = k0 + FLUSH_STEPS < job->k_words ? k0 + FLUSH_STEPS : job->k_words;
            uint8x16_t c[BITFX_TILE_PIXELS][PART / 2];
            for (int j = 0; j < P; ++j)
                for (int v = 0; v < PART / 2; ++v) c[j][v] = vdupq_n_u8(0);
            for (int64_t k = k0; k < k1; ++k) {
                const int64_t o = job->offsets[k];
                const uint64_t *w = wblock + k * BITFX_BLOCK + part;
                const uint64x2_t w0 = vld1q_u64(w), w1 = vld1q_u64(w + 2), w2 = vld1q_u64(w + 4), w3 = vld1q_u64(w + 6);
                for (int j = 0; j < P; ++j) {
                    const uint64x2_t xv = vdupq_n_u64(px[j][o]);
                    c[j][0] = vaddq_u8(c[j][0], vcntq_u8(vreinterpretq_u8_u64(veorq_u64(xv, w0))));
                    c[j][1] = vaddq_u8(c[j][1], vcntq_u8(vreinterpretq_u8_u64(veorq_u64(xv, w1))));
                    c[j][2] = vaddq_u8(c[j][2], vcntq_u8(vreinterpretq_u8_u64(veorq_u64(xv, w2))));
                    c[j][3] = vaddq_u8(c[j][3], vcntq_u8(vreinterpretq_u8_u64(veorq_u64(xv, w3))));
                }
            }
            for (int j = 0; j < P; ++j)
                for (int v = 0; v < PART / 2; ++v) total[j][v] = flush(total[j][v], c[j][v]);
        }
        for (int j = 0; j < P; ++j) {
            const int64_t *kc = job->kc + job->pixels[q0 + j].kc + lane0 + part;
            for (int v = 0; v < PART / 2; ++v) {
                const int64x2_t ones = vreinterpretq_s64_u64(vpaddlq_u32(total[j][v]));
                vst1q_s64(&dots[j][part + 2 * v], vsubq_s64(vld1q_s64(kc + 2 * v), vshlq_n_s64(ones, 1)));
            }
        }
    }
    bitfx_bconv_epilogue(job, n, g, block, q0, P, dots);
}

static inline __attribute__((always_inline)) void bconv_tile(const bitfx_bconv_job *job, int64_t n, int64_t g, int64_t block, int64_t q0,
                                                             int64_t count) {
    switch (count) {
    case 1: bconv_tile_of(job, n, g, block, q0, 1); break;
    case 2: bconv_tile_of(job, n, g, block, q0, 2); break;
    case 3: bconv_tile_of(job, n, g, block, q0, 3); break;
    default: bconv_tile_of(job, n, g, block, q0, 4);
    }
}

static void pack_row(const bitfx_pack_desc *d, const float *x, uint64_t *out, int64_t n, int64_t h) {
    bitfx_pack_row_portable(d, x, out, n, h);
}

/* acc[r][p] = Σ_k w[k][r] · panel[k][p] for the 4 channels of a tile and 16 pixels from `half`, fused multiply-adds. */
static inline void fconv_pixels16(const float *w, const float *panel, int64_t k_len, float acc[BITFX_FLOAT_TILE][BITFX_FLOAT_CHUNK], int half) {
    float32x4_t a[BITFX_FLOAT_TILE][4];
    for (int r = 0; r < BITFX_FLOAT_TILE; ++r)
        for (int v = 0; v < 4; ++v) a[r][v] = vdupq_n_f32(0.0f);
    const float *p = panel + half;
    for (int64_t k = 0; k < k_len; ++k, p += BITFX_FLOAT_CHUNK) {
        const float32x4_t x0 = vld1q_f32(p), x1 = vld1q_f32(p + 4), x2 = vld1q_f32(p + 8), x3 = vld1q_f32(p + 12);
        const float32x4_t wk = vld1q_f32(w + k * BITFX_FLOAT_TILE);
        a[0][0] = vfmaq_laneq_f32(a[0][0], x0, wk, 0);
        a[0][1] = vfmaq_laneq_f32(a[0][1], x1, wk, 0);
        a[0][2] = vfmaq_laneq_f32(a[0][2], x2, wk, 0);
        a[0][3] = vfmaq_laneq_f32(a[0][3], x3, wk, 0);
        a[1][0] = vfmaq_laneq_f32(a[1][0], x0, wk, 1);
        a[1][1] = vfmaq_laneq_f32(a[1][1], x1, wk, 1);
        a[1][2] = vfmaq_laneq_f32(a[1][2], x2, wk, 1);
        a[1][3] = vfmaq_laneq_f32(a[1][3], x3, wk, 1);
        a[2][0] = vfmaq_laneq_f32(a[2][0], x0, wk, 2);
        a[2][1] = vfmaq_laneq_f32(a[2][1], x1, wk, 2);
        a[2][2] = vfmaq_laneq_f32(a[2][2], x2, wk, 2);
        a[2][3] = vfmaq_laneq_f32(a[2][3], x3, wk, 2);
        a[3][0] = vfmaq_laneq_f32(a[3][0], x0, wk, 3);
        a[3][1] = vfmaq_laneq_f32(a[3][1], x1, wk, 3);
        a[3][2] = vfmaq_laneq_f32(a[3][2], x2, wk, 3);
        a[3][3] = vfmaq_laneq_f32(a[3][3], x3, wk, 3);
    }
    for (int r = 0; r < BITFX_FLOAT_TILE; ++r)
        for (int v = 0; v < 4; ++v) vst1q_f32(acc[r] + half + 4 * v, a[r][v]);
}

static void fconv_chunk(const bitfx_fconv_job *job, float *panel, int64_t n, int64_t g, int64_t p0, int64_t count) {
    const bitfx_fconv_desc *d = job->d;
    bitfx_float_panel_portable(d, job->x, n, g, p0, count, panel);
    const int64_t per_group = d->out_channels / d->groups;
    float acc[BITFX_FLOAT_TILE][BITFX_FLOAT_CHUNK] __attribute__((aligned(16)));
    for (int64_t t = 0; t < d->tiles; ++t) {
        const float *w = job->weights + (g * d->tiles + t) * job->k * BITFX_FLOAT_TILE;
        for (int half = 0; half < BITFX_FLOAT_CHUNK && half < count; half += 16) fconv_pixels16(w, panel, job->k, acc, half);
        for (int r = 0; r < BITFX_FLOAT_TILE && t * BITFX_FLOAT_TILE + r < per_group; ++r)
            bitfx_float_epilogue(job, acc[r], n, g * per_group + t * BITFX_FLOAT_TILE + r, p0, count);
    }
}

/* 3 pixels × 4 weight vectors: the 12 byte counters and their 7 operands stay in registers. */
static double popcount_peak(int64_t rounds, uint64_t seed) {
    uint64x2_t w[4], x[3];
    for (int i = 0; i < 4; ++i) w[i] = vcombine_u64(vdup_n_u64(seed * (uint64_t)(4 * i + 1)), vdup_n_u64(seed * (uint64_t)(4 * i + 3)));
    for (int j = 0; j < 3; ++j) x[j] = vdupq_n_u64(seed ^ (uint64_t)(j * 0x1234567));
    uint32x4_t total = vdupq_n_u32(0);
    for (int64_t r0 = 0; r0 < rounds; r0 += FLUSH_STEPS) {
        uint8x16_t c[12];
        for (int i = 0; i < 12; ++i) c[i] = vdupq_n_u8(0);
        const int64_t r1 = r0 + FLUSH_STEPS < rounds ? r0 + FLUSH_STEPS : rounds;
        for (int64_t r = r0; r < r1; ++r) {
            __asm__ volatile("" : "+w"(x[0]), "+w"(x[1]), "+w"(x[2]));
            for (int j = 0; j < 3; ++j)
                for (int i = 0; i < 4; ++i) c[4 * j + i] = vaddq_u8(c[4 * j + i], vcntq_u8(vreinterpretq_u8_u64(veorq_u64(x[j], w[i]))));
        }
        for (int i = 0; i < 12; ++i) total = flush(total, c[i]);
    }
    __asm__ volatile("" : : "w"(total));
    return (double)rounds * 12 * 128;
}

static void fmaxpool_row(const bitfx_fmaxpool_desc *d, const float *x, float *out, int64_t r) { bitfx_fmaxpool_row_portable(d, x, out, r); }

static void fgemm_columns(const bitfx_fgemm_desc *d, const float *x, const float *w, const float *bias, float *out, int64_t c0, int64_t c1) {
    bitfx_fgemm_columns_portable(d, x, w, bias, out, c0, c1);
}

BITFX_TILE_LOOP(bconv_tile, BITFX_TILE_PIXELS)

const bitfx_isa_ops bitfx_ops_neon = {pack_row, BITFX_TILE_PIXELS, bconv_tiles, fconv_chunk, 0, popcount_peak, fmaxpool_row, fgemm_columns, 1};
#endif
