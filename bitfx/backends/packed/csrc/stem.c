/* The fused stem: a float convolution (with its epilogue: folded BatchNorm scale/bias, Relu/Clip)
 * followed by a float max pool, in one pass. An item is a run of pool output rows of one image and
 * one 64-channel block; the convolution rows those pool rows read are computed by a row function
 * (the ISA's direct float kernel, or the int8 one of int8.c) into a per-thread stage of a few rows
 * (BAND pool rows at a time), pooled while they are in cache, and the rows the next band reads again
 * are moved to the stage's front. The full-size convolution output is never written. A channels-last
 * (NHWC) output is pooled per channel into a band buffer, then written pixel by pixel; a row function
 * that fills the stage pixel-major (bitfx_fconv_job.stage_pixels: the AVX-512 float and int8 VNNI
 * rows) is pooled straight into the NHWC output instead (maxpool_pixels.c). Without a direct float
 * kernel (its ISA has none, groups > 1, a nonzero pad value) bitfx_float_conv_maxpool runs the two
 * kernels one after the other through a full-size buffer. */
#include <stdlib.h>
#include <string.h>
#if defined(__SSE2__)
#include <xmmintrin.h>
#endif

#include "internal.h"
#include "pool.h"

#define BAND 4 /* pool output rows per fill of the stage */

typedef struct {
    const bitfx_isa_ops *isa;
    bitfx_row_fn row;
    const bitfx_fconv_job *job;
    const bitfx_fmaxpool_desc *pool;
    const float *block_weights;
    float **scratch; /* per thread: the direct kernel's stage, then stage_rows rows × 64 channels */
    float *out;
    int64_t blocks, runs, run_rows, stage_rows;
} stem_task;

static int64_t clip(int64_t v, int64_t lo, int64_t hi) { return v < lo ? lo : v > hi ? hi : v; }

/* Channel rows to channels-last pixels: dst[p·dst_stride + c] = src[c·src_stride + p] for `channels`
 * rows of `pixels` (4 × 4 SSE transposes where the CPU has SSE, the edges one float at a time). */
static void rows_to_pixels(const float *src, int64_t src_stride, float *dst, int64_t dst_stride, int64_t channels, int64_t pixels) {
    int64_t c4 = 0, p4 = 0; /* channels and pixels done by whole 4 × 4 blocks */
#if defined(__SSE2__)
    c4 = channels / 4 * 4, p4 = pixels / 4 * 4;
    for (int64_t p = 0; p < p4; p += 4) {
        for (int64_t c = 0; c < c4; c += 4) {
            __m128 r0 = _mm_loadu_ps(src + c * src_stride + p), r1 = _mm_loadu_ps(src + (c + 1) * src_stride + p);
            __m128 r2 = _mm_loadu_ps(src + (c + 2) * src_stride + p), r3 = _mm_loadu_ps(src + (c + 3) * src_stride + p);
            _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
            _mm_storeu_ps(dst + p * dst_stride + c, r0), _mm_storeu_ps(dst + (p + 1) * dst_stride + c, r1);
            _mm_storeu_ps(dst + (p + 2) * dst_stride + c, r2), _mm_storeu_ps(dst + (p + 3) * dst_stride + c, r3);
        }
    }
#endif
    for (int64_t p = 0; p < pixels; ++p)
        for (int64_t c = p < p4 ? c4 : 0; c < channels; ++c) dst[p * dst_stride + c] = src[c * src_stride + p];
}

/* Convolution rows [lo, hi) that pool rows [ph0, ph1) read (their taps clipped to the image). */
static void conv_rows(const stem_task *t, int64_t ph0, int64_t ph1, int64_t *lo, int64_t *hi) {
    const bitfx_fmaxpool_desc *p = t->pool;
    const int64_t height = t->job->d->out_h;
    *lo = clip(ph0 * p->stride_h - p->pad_top, 0, height);
    *hi = clip((ph1 - 1) * p->stride_h - p->pad_top + (p->kernel_h - 1) * p->dilation_h + 1, *lo, height);
}

static void stem_item(void *ctx, int64_t item, int64_t worker) {
    const stem_task *t = ctx;
    const bitfx_fconv_desc *d = t->job->d;
    const bitfx_fmaxpool_desc *p = t->pool;
    const int64_t block = item % t->blocks, run = (item / t->blocks) % t->runs, n = item / (t->blocks * t->runs);
    const int64_t first = run * t->run_rows, last = first + t->run_rows < p->out_h ? first + t->run_rows : p->out_h;
    const int64_t channels = d->out_channels - block * BITFX_FLOAT_BLOCK < BITFX_FLOAT_BLOCK ? d->out_channels - block * BITFX_FLOAT_BLOCK
                                                                                             : BITFX_FLOAT_BLOCK;
    float *stage = t->scratch[worker], *rows = stage + bitfx_direct_stage_floats(d);
    const int64_t row_floats = t->stage_rows * d->out_w; /* one channel's rows in the stage */
    float *pooled = rows + row_floats * BITFX_FLOAT_BLOCK; /* NHWC output: a band's pool rows, per channel */
    bitfx_fconv_job job = *t->job;
    job.stage_out = rows, job.stage_channel0 = block * BITFX_FLOAT_BLOCK, job.stage_rows = t->stage_rows;
    int64_t held0 = 0, held1 = 0; /* convolution rows held in the stage, from its first row */
    for (int64_t ph0 = first; ph0 < last; ph0 += BAND) {
        const int64_t ph1 = ph0 + BAND < last ? ph0 + BAND : last;
        int64_t lo, hi;
        conv_rows(t, ph0, ph1, &lo, &hi);
        const int64_t keep = held0 <= lo && lo < held1 ? held1 - lo : 0;
        if (keep > 0 && lo > held0 && job.stage_pixels)
            memmove(rows, rows + (lo - held0) * d->out_w * BITFX_FLOAT_BLOCK, (size_t)(keep * d->out_w * BITFX_FLOAT_BLOCK) * sizeof(float));
        else if (keep > 0 && lo > held0)
            for (int64_t c = 0; c < channels; ++c)
                memmove(rows + c * row_floats, rows + c * row_floats + (lo - held0) * d->out_w, (size_t)(keep * d->out_w) * sizeof(float));
        job.stage_row0 = lo;
        for (int64_t oh = lo + keep; oh < hi; ++oh) t->row(&job, t->block_weights, stage, n, oh, block);
        held0 = lo, held1 = hi;
        /* The pool over the stage: its rows are convolution rows lo .. hi−1, one plane per channel. */
        bitfx_fmaxpool_desc local = *p;
        local.planes = 1, local.height = hi - lo, local.pad_top = p->pad_top + lo - ph0 * p->stride_h, local.out_h = ph1 - ph0;
#if defined(__x86_64__)
        if (job.stage_pixels) {
            bitfx_maxpool_pixels_avx512(&local, rows, t->out + ((n * p->out_h + ph0) * p->out_w) * d->out_channels + block * BITFX_FLOAT_BLOCK,
                                        d->out_channels, channels);
            continue;
        }
#endif
        for (int64_t c = 0; c < channels; ++c) {
            float *dst = d->channels_last ? pooled + c * BAND * p->out_w
                                          : t->out + ((n * d->out_channels + block * BITFX_FLOAT_BLOCK + c) * p->out_h + ph0) * p->out_w;
            for (int64_t r = 0; r < local.out_h; ++r) t->isa->fmaxpool_row(&local, rows + c * row_floats, dst, r);
        }
        if (d->channels_last)
            rows_to_pixels(pooled, BAND * p->out_w, t->out + (n * p->out_h + ph0) * p->out_w * d->out_channels + block * BITFX_FLOAT_BLOCK,
                           d->out_channels, channels, local.out_h * p->out_w);
    }
}

/* Both kernels through a full-size buffer: the path without a direct kernel (NHWC output: the NCHW
 * pool output, then converted). */
static int unfused(const bitfx_fconv_desc *d, const bitfx_fmaxpool_desc *pool, const float *x, const float *weights,
                   const float *block_weights, const float *scale, const float *bias, float *out) {
    const int64_t pixels = pool->out_h * pool->out_w;
    bitfx_fconv_desc plain = *d;
    plain.channels_last = 0;
    float *conv = malloc((size_t)(d->batch * d->out_channels * d->out_h * d->out_w) * sizeof(float));
    float *pooled = d->channels_last ? malloc((size_t)(d->batch * d->out_channels * pixels) * sizeof(float)) : out;
    int status = conv && pooled ? BITFX_OK : BITFX_ERR_ALLOC;
    if (status == BITFX_OK) status = bitfx_float_conv(&plain, x, weights, block_weights, scale, bias, 0, conv);
    if (status == BITFX_OK) status = bitfx_float_maxpool(pool, conv, pooled);
    for (int64_t n = 0; status == BITFX_OK && d->channels_last && n < d->batch; ++n)
        rows_to_pixels(pooled + n * d->out_channels * pixels, pixels, out + n * pixels * d->out_channels, d->out_channels, d->out_channels,
                       pixels);
    free(conv);
    if (pooled != out) free(pooled);
    return status;
}

/* Whether `pool` reads the output of the convolution `d` (no residual), and both are well formed. */
static int pool_fits(const bitfx_fconv_desc *d, const bitfx_fmaxpool_desc *pool) {
    return !d->has_residual && d->groups >= 1 && d->batch >= 1 && d->out_h >= 1 && d->out_w >= 1 &&
           pool->planes == d->batch * d->out_channels && pool->height == d->out_h && pool->width == d->out_w && pool->out_h >= 1 &&
           pool->out_w >= 1 && pool->kernel_h >= 1 && pool->stride_h >= 1 && pool->dilation_h >= 1 && pool->pad_top >= 0;
}

int bitfx_conv_maxpool_rows(const bitfx_fconv_job *job, const bitfx_fmaxpool_desc *pool, bitfx_row_fn row, const float *block_weights,
                            float *out) {
    const bitfx_fconv_desc *d = job->d;
    if (!pool_fits(d, pool)) return BITFX_ERR_ARGUMENT;
    const int64_t threads = bitfx_get_threads();
    const int64_t blocks = (d->out_channels + BITFX_FLOAT_BLOCK - 1) / BITFX_FLOAT_BLOCK;
    /* Runs of pool rows: one per (image, block) on one thread, about 2 items per thread otherwise.
     * A run boundary computes the convolution rows both runs read twice (ResNet-18: one row of
     * 112 per boundary), so more items cost more duplicated rows than they save in balance. */
    const int64_t runs = threads > 1 ? (2 * threads + d->batch * blocks - 1) / (d->batch * blocks) : 1;
    const int64_t run_rows = (pool->out_h + runs - 1) / runs;
    const int64_t stage_rows = (BAND - 1) * pool->stride_h + (pool->kernel_h - 1) * pool->dilation_h + 1;
    const int64_t pooled = d->channels_last ? BAND * pool->out_w * BITFX_FLOAT_BLOCK : 0;
    const size_t bytes = (size_t)(bitfx_direct_stage_floats(d) + stage_rows * d->out_w * BITFX_FLOAT_BLOCK + pooled) * sizeof(float);
    /* Only the direct kernel's stage is zeroed: the rows after it are written before they are read. */
    float **scratch = bitfx_thread_scratch(threads, bytes, (size_t)bitfx_direct_stage_floats(d) * sizeof(float));
    if (!scratch) return BITFX_ERR_ALLOC;
    stem_task task = {bitfx_current_ops(), row, job, pool, block_weights, scratch, out, blocks, (pool->out_h + run_rows - 1) / run_rows,
                      run_rows, stage_rows};
    bitfx_parallel_for(d->batch * blocks * task.runs, threads, stem_item, &task);
    bitfx_free_thread_scratch(scratch, threads);
    return BITFX_OK;
}

int bitfx_float_conv_maxpool(const bitfx_fconv_desc *d, const bitfx_fmaxpool_desc *pool, const float *x, const float *weights,
                             const float *block_weights, const float *scale, const float *bias, float *out) {
    if (!d || !pool || !x || !weights || !scale || !bias || !out || !pool_fits(d, pool)) return BITFX_ERR_ARGUMENT;
    const bitfx_isa_ops *isa = bitfx_current_ops();
    if (!isa->fconv_row || !block_weights || d->groups != 1 || d->pad_value != 0.0)
        return unfused(d, pool, x, weights, block_weights, scale, bias, out);
    /* The AVX-512 row fills an NHWC stem's stage pixel-major, pooled in the order of the portable pool
     * for rows up to BITFX_POOL_ROW wide (bitfx_maxpool_pixels_avx512). */
#if defined(__x86_64__)
    const int64_t pixels = isa == &bitfx_ops_avx512 && d->channels_last && d->out_w <= BITFX_POOL_ROW;
#else
    const int64_t pixels = 0;
#endif
    const bitfx_fconv_job job = {d, x, weights, scale, bias, 0, out, d->channels * d->kernel_h * d->kernel_w, 0, 0, 0, 0, 0, pixels};
    return bitfx_conv_maxpool_rows(&job, pool, isa->fconv_row, block_weights, out);
}
