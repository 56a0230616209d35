/* The portable path: plain C that runs on any CPU (no popcount instruction assumed). */
#include "output_transform.h"
#include "portable.h"
#include "tile.h"

/* Bit-parallel popcount without a multiply, so the compiler can vectorise it with SSE2. */
static inline uint64_t popcount64(uint64_t v) {
    v = v - ((v >> 1) & 0x5555555555555555ull);
    v = (v & 0x3333333333333333ull) + ((v >> 2) & 0x3333333333333333ull);
    v = (v + (v >> 4)) & 0x0f0f0f0f0f0f0f0full;
    v += v >> 8;
    v += v >> 16;
    v += v >> 32;
    return v & 0x7f;
}

static inline __attribute__((always_inline)) void bconv_tile(const bitfx_bconv_job *job, int64_t n, int64_t g, int64_t block, int64_t q0, int64_t count) {
    const bitfx_bconv_desc *d = job->d;
    bitfx_tile tile;
    bitfx_tile_pixels(job, n, g, q0, count, BITFX_TILE_PIXELS, &tile);
    const uint64_t *const *px = tile.px;
    const uint64_t *w = job->weights + (g * d->blocks + block) * job->k_words * BITFX_BLOCK;
    uint64_t acc[BITFX_TILE_PIXELS][BITFX_BLOCK] = {{0}};
    for (int64_t k = 0; k < job->k_words; ++k, w += BITFX_BLOCK) {
        const int64_t o = job->offsets[k];
        for (int j = 0; j < BITFX_TILE_PIXELS; ++j) {
            const uint64_t xv = px[j][o];
            for (int l = 0; l < BITFX_BLOCK; ++l) acc[j][l] += popcount64(xv ^ w[l]);
        }
    }
    int64_t dots[BITFX_TILE_PIXELS][BITFX_BLOCK];
    const int64_t lane0 = (g * d->blocks + block) * BITFX_BLOCK;
    for (int j = 0; j < BITFX_TILE_PIXELS; ++j) {
        const int64_t *kc = job->kc + job->pixels[q0 + (j < count ? j : count - 1)].kc + lane0;
        for (int l = 0; l < BITFX_BLOCK; ++l) dots[j][l] = kc[l] - 2 * (int64_t)acc[j][l];
    }
    bitfx_bconv_epilogue(job, n, g, block, q0, count, dots);
}

static void pack_row(const bitfx_pack_desc *d, const float *x, uint64_t *out, int64_t n, int64_t h) {
    bitfx_pack_row_portable(d, x, out, n, h);
}

static void fconv_chunk(const bitfx_fconv_job *job, float *panel, int64_t n, int64_t g, int64_t p0, int64_t count) {
    const bitfx_fconv_desc *d = job->d;
    bitfx_float_panel_portable(d, job->x, n, g, p0, count, panel);
    const int64_t per_group = d->out_channels / d->groups;
    for (int64_t t = 0; t < d->tiles; ++t) {
        const float *w = job->weights + (g * d->tiles + t) * job->k * BITFX_FLOAT_TILE;
        float acc[BITFX_FLOAT_TILE][BITFX_FLOAT_CHUNK] = {{0}};
        for (int64_t k = 0; k < job->k; ++k)
            for (int r = 0; r < BITFX_FLOAT_TILE; ++r)
                for (int p = 0; p < BITFX_FLOAT_CHUNK; ++p) acc[r][p] += w[k * BITFX_FLOAT_TILE + r] * panel[k * BITFX_FLOAT_CHUNK + p];
        for (int r = 0; r < BITFX_FLOAT_TILE && t * BITFX_FLOAT_TILE + r < per_group; ++r)
            bitfx_float_epilogue(job, acc[r], n, g * per_group + t * BITFX_FLOAT_TILE + r, p0, count);
    }
}

static double popcount_peak(int64_t rounds, uint64_t seed) {
    uint64_t w[8], acc[12] = {0};
    for (int i = 0; i < 8; ++i) w[i] = seed * (uint64_t)(2 * i + 1);
    uint64_t x0 = seed ^ 0x5555, x1 = seed ^ 0x3333, x2 = seed ^ 0x0f0f;
    for (int64_t r = 0; r < rounds; ++r) {
        __asm__ volatile("" : "+r"(x0), "+r"(x1), "+r"(x2));
        for (int i = 0; i < 4; ++i) {
            acc[i] += popcount64(x0 ^ w[i]);
            acc[4 + i] += popcount64(x1 ^ w[i]);
            acc[8 + i] += popcount64(x2 ^ w[i]);
        }
    }
    uint64_t sum = 0;
    for (int i = 0; i < 12; ++i) sum += acc[i];
    __asm__ volatile("" : : "r"(sum));
    return (double)rounds * 12 * 64;
}

static void fmaxpool_row(const bitfx_fmaxpool_desc *d, const float *x, float *out, int64_t r) { bitfx_fmaxpool_row_portable(d, x, out, r); }

static void fgemm_columns(const bitfx_fgemm_desc *d, const float *x, const float *w, const float *bias, float *out, int64_t c0, int64_t c1) {
    bitfx_fgemm_columns_portable(d, x, w, bias, out, c0, c1);
}

BITFX_TILE_LOOP(bconv_tile, BITFX_TILE_PIXELS)

const bitfx_isa_ops bitfx_ops_scalar = {pack_row, BITFX_TILE_PIXELS, bconv_tiles, fconv_chunk, 0, popcount_peak, fmaxpool_row, fgemm_columns, 1};
