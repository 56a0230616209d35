/* The public entry points: ISA choice, thread count, and the parallel drivers that split each
 * call into items (rows, runs of tiles, pixel chunks) for the chosen ISA's inner functions
 * (isa_*.c) and hand them to the work-sharing pool (pool.h). Compiled for the baseline of the machine's
 * architecture (x86-64 or AArch64). */
#include <stdlib.h>
#include <string.h>

#include <omp.h>

#include "internal.h"
#include "pool.h"

static int64_t current_isa = -1;
static int64_t thread_count = 0; /* 0: OpenMP's default */

static const bitfx_isa_ops *isa_table(int64_t isa) {
#if defined(__x86_64__)
    if (isa == BITFX_ISA_AVX512) return &bitfx_ops_avx512;
    if (isa == BITFX_ISA_AVX2) return &bitfx_ops_avx2;
#endif
#if defined(__aarch64__)
    if (isa == BITFX_ISA_NEON) return &bitfx_ops_neon;
#endif
    (void)isa;
    return &bitfx_ops_scalar;
}

int bitfx_isa_supported(int64_t isa) {
    if (isa == BITFX_ISA_SCALAR) return 1;
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (isa == BITFX_ISA_AVX2)
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("popcnt");
    if (isa == BITFX_ISA_AVX512)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vpopcntdq") && __builtin_cpu_supports("fma") &&
               __builtin_cpu_supports("popcnt");
#endif
#if defined(__aarch64__)
    if (isa == BITFX_ISA_NEON) return 1; /* AdvSIMD is mandatory on AArch64 */
#endif
    return 0;
}

int64_t bitfx_best_isa(void) {
    for (int64_t isa = BITFX_ISA_COUNT - 1; isa > 0; --isa)
        if (bitfx_isa_supported(isa)) return isa;
    return BITFX_ISA_SCALAR;
}

int bitfx_set_isa(int64_t isa) {
    if (isa < 0 || isa >= BITFX_ISA_COUNT || !bitfx_isa_supported(isa)) return -1;
    current_isa = isa;
    return 0;
}

int64_t bitfx_get_isa(void) {
    if (current_isa < 0) current_isa = bitfx_best_isa();
    return current_isa;
}

static const bitfx_isa_ops *ops(void) { return isa_table(bitfx_get_isa()); }
const bitfx_isa_ops *bitfx_current_ops(void) { return ops(); }

void bitfx_set_threads(int64_t threads) { thread_count = threads > 0 ? threads : 0; }
int64_t bitfx_get_threads(void) { return thread_count > 0 ? thread_count : omp_get_max_threads(); }
int64_t bitfx_max_threads(void) { return omp_get_num_procs(); }

typedef struct {
    const bitfx_isa_ops *isa;
    const bitfx_pack_desc *d;
    const float *x;
    uint64_t *out;
    int64_t chunk, rows; /* rows per item, rows in all (images × height) */
} pack_task;

static void pack_item(void *ctx, int64_t item, int64_t worker) {
    const pack_task *t = ctx;
    (void)worker;
    const int64_t last = (item + 1) * t->chunk < t->rows ? (item + 1) * t->chunk : t->rows;
    for (int64_t r = item * t->chunk; r < last; ++r)
        t->isa->pack_row(t->d, t->x, t->out, r / t->d->out.height, r % t->d->out.height);
}

int bitfx_pack(const bitfx_pack_desc *d, const float *x, uint64_t *out) {
    if (!d || !x || !out || d->groups < 1 || d->channels % d->groups) return BITFX_ERR_ARGUMENT;
    /* An item is a run of rows, about 4 per thread: a row alone (a microsecond or less on small
     * planes) costs about as much to claim from the shared counter as to pack. */
    const int64_t threads = bitfx_get_threads(), rows = d->out.batch * d->out.height;
    const int64_t chunk = (rows + 4 * threads - 1) / (4 * threads);
    const bitfx_isa_ops *isa = d->channels_last && !ops()->channels_last ? &bitfx_ops_scalar : ops();
    pack_task task = {isa, d, x, out, chunk, rows};
    bitfx_parallel_for((rows + chunk - 1) / chunk, threads, pack_item, &task);
    return BITFX_OK;
}

int bitfx_fill_border(const bitfx_packed_geom *g, const uint64_t *pad_pixel, uint64_t *buffer) {
    if (!g || !pad_pixel || !buffer) return BITFX_ERR_ARGUMENT;
    const int64_t hp = bitfx_padded_h(g), wp = bitfx_padded_w(g), words = g->words;
    for (int64_t n = 0; n < g->batch; ++n) {
        for (int64_t r = 0; r < hp; ++r) {
            uint64_t *row = buffer + (n * hp + r) * wp * words;
            const int interior = r >= g->pad_top && r < g->pad_top + g->height;
            for (int64_t c = 0; c < wp; ++c) {
                if (interior && c == g->pad_left) c += g->width;
                if (c >= wp) break;
                memcpy(row + c * words, pad_pixel, (size_t)words * sizeof(uint64_t));
            }
        }
    }
    return BITFX_OK;
}

typedef struct {
    const bitfx_isa_ops *isa;
    const bitfx_bconv_job *job;
    int64_t tiles, run_tiles, runs; /* tiles per (image, group, block), split into `runs` runs */
} bconv_task;

static void bconv_item(void *ctx, int64_t item, int64_t worker) {
    const bconv_task *t = ctx;
    const bitfx_bconv_desc *d = t->job->d;
    (void)worker;
    const int64_t run = item % t->runs, rest = item / t->runs;
    const int64_t block = rest % d->blocks, g = (rest / d->blocks) % d->groups, n = rest / (d->blocks * d->groups);
    const int64_t first = run * t->run_tiles, last = first + t->run_tiles < t->tiles ? first + t->run_tiles : t->tiles;
    t->isa->bconv_tiles(t->job, n, g, block, first, last);
}

int bitfx_binary_conv(const bitfx_bconv_desc *d, const uint64_t *x, const uint64_t *weights, const int64_t *taps,
                      const bitfx_bconv_pixel *pixels, const int64_t *kc, const float *scale, const float *bias,
                      const float *residual, const int64_t *threshold, const uint32_t *flip, void *out) {
    if (!d || !x || !weights || !taps || !pixels || !kc || !scale || !bias || !threshold || !flip || !out)
        return BITFX_ERR_ARGUMENT;
    if ((d->has_residual && !residual) || d->groups < 1 || (d->out_mode == BITFX_OUT_PACKED && d->groups != 1))
        return BITFX_ERR_ARGUMENT;
    const int nhwc = d->channels_last && d->out_mode == BITFX_OUT_FLOAT;
    const bitfx_isa_ops *isa = nhwc && !ops()->channels_last ? &bitfx_ops_scalar : ops();
    const int64_t image_words = bitfx_padded_h(&d->in) * bitfx_padded_w(&d->in) * d->in.words;
    const int64_t out_image = bitfx_padded_h(&d->out) * bitfx_padded_w(&d->out) * d->out.words * 2;
    const bitfx_bconv_job job = {d,        x,    weights, pixels, kc,  threshold, taps, scale, bias, residual, flip, out,
                                 d->kernel_h * d->kernel_w * d->group_words, image_words, out_image,
                                 d->groups * d->blocks * BITFX_BLOCK};
    const int64_t plane = d->out_h * d->out_w, threads = bitfx_get_threads();
    const int64_t tiles = (plane + isa->tile_pixels - 1) / isa->tile_pixels;
    const int64_t blocks = d->in.batch * d->groups * d->blocks;
    /* An item is a run of consecutive tiles of one (image, group, block), which share their
     * weight block; about 8 items per thread so that a late thread's share is small. */
    const int64_t runs = threads > 1 ? (8 * threads + blocks - 1) / blocks : 1;
    const int64_t run_tiles = (tiles + runs - 1) / runs;
    bconv_task task = {isa, &job, tiles, run_tiles, (tiles + run_tiles - 1) / run_tiles};
    bitfx_parallel_for(blocks * task.runs, threads, bconv_item, &task);
    return BITFX_OK;
}

typedef struct {
    const bitfx_bmaxpool_desc *d;
    const uint64_t *x;
    uint64_t *out;
} bmaxpool_task;

/* Output row r (image r / out_h) of a binary max pool. */
static void bmaxpool_item(void *ctx, int64_t r, int64_t worker) {
    const bmaxpool_task *t = ctx;
    const bitfx_bmaxpool_desc *d = t->d;
    const uint64_t *x = t->x;
    (void)worker;
    const int64_t words = d->in.words, hp = bitfx_padded_h(&d->in), wp = bitfx_padded_w(&d->in);
    const int64_t ohp = bitfx_padded_h(&d->out), owp = bitfx_padded_w(&d->out);
    const int64_t row0 = d->in.pad_top - d->pad_top, col0 = d->in.pad_left - d->pad_left;
    const int64_t n = r / d->out_h, oh = r % d->out_h;
    uint64_t *dst = t->out + ((n * ohp + d->out.pad_top + oh) * owp + d->out.pad_left) * words;
    for (int64_t ow = 0; ow < d->out_w; ++ow, dst += words) {
        for (int64_t w = 0; w < words; ++w) dst[w] = ~(uint64_t)0;
        for (int64_t kh = 0; kh < d->kernel_h; ++kh) {
            const int64_t ih = row0 + oh * d->stride_h + kh * d->dilation_h;
            for (int64_t kw = 0; kw < d->kernel_w; ++kw) {
                const int64_t iw = col0 + ow * d->stride_w + kw * d->dilation_w;
                const uint64_t *src = x + ((n * hp + ih) * wp + iw) * words;
                for (int64_t w = 0; w < words; ++w) dst[w] &= src[w];
            }
        }
    }
}

int bitfx_binary_maxpool(const bitfx_bmaxpool_desc *d, const uint64_t *x, uint64_t *out) {
    if (!d || !x || !out) return BITFX_ERR_ARGUMENT;
    bmaxpool_task task = {d, x, out};
    bitfx_parallel_for(d->in.batch * d->out_h, bitfx_get_threads(), bmaxpool_item, &task);
    return BITFX_OK;
}

typedef struct {
    const bitfx_isa_ops *isa;
    const bitfx_fconv_job *job;
    const float *block_weights; /* non-null: the direct kernel, one item per (image, row, block) */
    float **panels;             /* one scratch buffer per thread: im2col panel or direct stage */
    int64_t chunks, plane, blocks;
} fconv_task;

static void fconv_item(void *ctx, int64_t item, int64_t worker) {
    const fconv_task *t = ctx;
    const bitfx_fconv_desc *d = t->job->d;
    if (t->block_weights) {
        const int64_t block = item % t->blocks, oh = (item / t->blocks) % d->out_h, n = item / (t->blocks * d->out_h);
        t->isa->fconv_row(t->job, t->block_weights, t->panels[worker], n, oh, block);
        return;
    }
    const int64_t chunk = item % t->chunks, g = (item / t->chunks) % d->groups, n = item / (t->chunks * d->groups);
    const int64_t p0 = chunk * BITFX_FLOAT_CHUNK;
    const int64_t count = t->plane - p0 < BITFX_FLOAT_CHUNK ? t->plane - p0 : BITFX_FLOAT_CHUNK;
    t->isa->fconv_chunk(t->job, t->panels[worker], n, g, p0, count);
}

int bitfx_float_conv(const bitfx_fconv_desc *d, const float *x, const float *weights, const float *block_weights,
                     const float *scale, const float *bias, const float *residual, float *out) {
    if (!d || !x || !weights || !scale || !bias || !out || (d->has_residual && !residual) || d->groups < 1 || d->channels_last)
        return BITFX_ERR_ARGUMENT;
    const bitfx_isa_ops *isa = ops();
    const int64_t k = d->channels / d->groups * d->kernel_h * d->kernel_w;
    const bitfx_fconv_job job = {d, x, weights, scale, bias, residual, out, k};
    const int64_t plane = d->out_h * d->out_w;
    const int64_t chunks = (plane + BITFX_FLOAT_CHUNK - 1) / BITFX_FLOAT_CHUNK;
    const int64_t blocks = (d->out_channels + BITFX_FLOAT_BLOCK - 1) / BITFX_FLOAT_BLOCK;
    const int direct = isa->fconv_row && block_weights && d->groups == 1 && d->pad_value == 0.0;
    const int64_t total = direct ? d->batch * d->out_h * blocks : d->batch * d->groups * chunks;
    const int64_t threads = bitfx_get_threads();
    const int64_t stage = bitfx_direct_stage_floats(d);
    const size_t panel_bytes = (size_t)(direct ? stage : k * BITFX_FLOAT_CHUNK) * sizeof(float);
    float **panels = bitfx_thread_scratch(threads, panel_bytes, panel_bytes);
    if (!panels) return BITFX_ERR_ALLOC;
    fconv_task task = {isa, &job, direct ? block_weights : 0, panels, chunks, plane, blocks};
    bitfx_parallel_for(total, threads, fconv_item, &task);
    bitfx_free_thread_scratch(panels, threads);
    return BITFX_OK;
}

typedef struct {
    const bitfx_isa_ops *isa;
    const bitfx_fmaxpool_desc *d;
    const float *x;
    float *out;
} fmaxpool_task;

static void fmaxpool_item(void *ctx, int64_t r, int64_t worker) {
    const fmaxpool_task *t = ctx;
    (void)worker;
    t->isa->fmaxpool_row(t->d, t->x, t->out, r);
}

int bitfx_float_maxpool(const bitfx_fmaxpool_desc *d, const float *x, float *out) {
    if (!d || !x || !out) return BITFX_ERR_ARGUMENT;
    fmaxpool_task task = {ops(), d, x, out};
    bitfx_parallel_for(d->planes * d->out_h, bitfx_get_threads(), fmaxpool_item, &task);
    return BITFX_OK;
}

typedef struct {
    const bitfx_isa_ops *isa;
    const bitfx_fgemm_desc *d;
    const float *x, *weights, *bias;
    float *out;
    int64_t chunk; /* output channels per item */
} fgemm_task;

static void fgemm_item(void *ctx, int64_t item, int64_t worker) {
    const fgemm_task *t = ctx;
    const int64_t c0 = item * t->chunk, c1 = c0 + t->chunk < t->d->channels ? c0 + t->chunk : t->d->channels;
    (void)worker;
    t->isa->fgemm_columns(t->d, t->x, t->weights, t->bias, t->out, c0, c1);
}

int bitfx_float_gemm(const bitfx_fgemm_desc *d, const float *x, const float *weights, const float *bias, float *out) {
    if (!d || !x || !weights || !out || (d->has_bias && !bias)) return BITFX_ERR_ARGUMENT;
    const int64_t threads = bitfx_get_threads();
    /* Columns in multiples of 16, about 4 items per thread. */
    const int64_t chunk = ((d->channels + 4 * threads - 1) / (4 * threads) + 15) / 16 * 16;
    fgemm_task task = {ops(), d, x, weights, bias, out, chunk};
    bitfx_parallel_for((d->channels + chunk - 1) / chunk, threads, fgemm_item, &task);
    return BITFX_OK;
}

typedef struct {
    const bitfx_isa_ops *isa;
    int64_t rounds;
    double work[64]; /* bit-MACs done per item */
} peak_task;

static void peak_item(void *ctx, int64_t item, int64_t worker) {
    peak_task *t = ctx;
    (void)worker;
    t->work[item] = t->isa->popcount_peak(t->rounds, 0x9e3779b97f4a7c15ull + (uint64_t)item);
}

double bitfx_popcount_peak(int64_t rounds) {
    /* One item per thread; on a busy machine a thread that is not scheduled leaves its item to the
     * others, so the rate measured is what the threads actually got. */
    const int64_t threads = bitfx_get_threads() < 64 ? bitfx_get_threads() : 64;
    peak_task task = {ops(), rounds, {0}};
    bitfx_parallel_for(threads, threads, peak_item, &task);
    double total = 0;
    for (int64_t i = 0; i < threads; ++i) total += task.work[i];
    return total;
}
