/* The int8 convolution (bitfx_int8_conv): quantizes the input once per call into a u8 buffer with
 * a border of the zero point, then runs an int8 row function over every (image, output row,
 * 64-channel block), or the fused max pool driver of stem.c. The row function is AVX-512 VNNI
 * (int8_vnni.c) when the CPU has it and the ISA in use is AVX-512, else the plain loop of
 * int8_row.h, compiled for AVX2 (fconv_direct_avx2.c) when the ISA in use is AVX2 or AVX-512 and
 * for baseline x86-64 here otherwise; all compute the same int32 sums, so the outputs do not
 * depend on the path. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "int8_row.h"
#include "internal.h"
#include "pool.h"

/* Largest reduction length: K · 255 · 127 stays below 2³¹. */
#define MAX_K 65536

static int has_vnni(void) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    return bitfx_get_isa() == BITFX_ISA_AVX512 && __builtin_cpu_supports("avx512vnni");
#else
    return 0;
#endif
}

/* The portable quantization: the same float operations and rounding as the VNNI one. */
static void quantize_portable(const float *x, uint8_t *q, int64_t count, float inv_scale, float zero_point) {
    for (int64_t i = 0; i < count; ++i) {
        float v = x[i] * inv_scale + zero_point;
        v = v > 0.0f ? v : 0.0f; /* NaN → 0 */
        v = v < 255.0f ? v : 255.0f;
        q[i] = (uint8_t)lrintf(v);
    }
}

static void int8_row_portable(const bitfx_fconv_job *job, const float *block_weights, float *stage, int64_t n, int64_t oh, int64_t block) {
    bitfx_int8_row_plain(job, block_weights, stage, n, oh, block);
}

typedef struct {
    const bitfx_fconv_desc *d;
    const bitfx_int8_desc *q;
    const float *x;
    const bitfx_int8_input *in;
    uint8_t *buffer;
    int vnni;
} quantize_task;

/* Input row (image, channel, row) r into the interior of the u8 buffer. */
static void quantize_item(void *ctx, int64_t r, int64_t worker) {
    const quantize_task *t = ctx;
    const bitfx_fconv_desc *d = t->d;
    (void)worker;
    const int64_t h = r % d->height, plane = r / d->height;
    const float *src = t->x + r * d->width;
    uint8_t *dst = t->buffer + (plane * t->in->rows + d->pad_top + h) * t->in->cols + d->pad_left;
#if defined(__x86_64__)
    if (t->vnni) {
        bitfx_quantize_vnni(src, dst, d->width, (float)t->q->inv_scale, (float)t->q->zero_point);
        return;
    }
#endif
    quantize_portable(src, dst, d->width, (float)t->q->inv_scale, (float)t->q->zero_point);
}

typedef struct {
    const bitfx_fconv_job *job;
    bitfx_row_fn row;
    float **scratch;
    int64_t blocks;
} rows_task;

static void rows_item(void *ctx, int64_t item, int64_t worker) {
    const rows_task *t = ctx;
    const bitfx_fconv_desc *d = t->job->d;
    const int64_t block = item % t->blocks, oh = (item / t->blocks) % d->out_h, n = item / (t->blocks * d->out_h);
    t->row(t->job, 0, t->scratch[worker], n, oh, block);
}

static int run_rows(const bitfx_fconv_job *job, bitfx_row_fn row) {
    const bitfx_fconv_desc *d = job->d;
    const int64_t threads = bitfx_get_threads(), blocks = (d->out_channels + BITFX_FLOAT_BLOCK - 1) / BITFX_FLOAT_BLOCK;
    const size_t bytes = (size_t)bitfx_direct_stage_floats(d) * sizeof(float);
    float **scratch = calloc((size_t)threads, sizeof(float *));
    int status = scratch ? BITFX_OK : BITFX_ERR_ALLOC;
    for (int64_t i = 0; status == BITFX_OK && i < threads; ++i) {
        scratch[i] = aligned_alloc(64, bytes);
        if (!scratch[i]) status = BITFX_ERR_ALLOC;
        else memset(scratch[i], 0, bytes);
    }
    if (status == BITFX_OK) {
        rows_task task = {job, row, scratch, blocks};
        bitfx_parallel_for(d->batch * d->out_h * blocks, threads, rows_item, &task);
    }
    for (int64_t i = 0; scratch && i < threads; ++i) free(scratch[i]);
    free(scratch);
    return status;
}

static int well_formed(const bitfx_fconv_desc *d, const bitfx_int8_desc *q) {
    const int64_t k = d->channels * d->kernel_h * q->quads * 4;
    return d->groups == 1 && !d->has_residual && d->batch >= 1 && d->channels >= 1 && d->height >= 1 && d->width >= 1 &&
           d->out_channels >= 1 && d->kernel_h >= 1 && d->kernel_w >= 1 && d->stride_h >= 1 && d->stride_w >= 1 && d->dilation_h >= 1 &&
           d->dilation_w == 1 && d->pad_top >= 0 && d->pad_left >= 0 && d->out_h >= 1 && d->out_w >= 1 &&
           q->quads == (d->kernel_w + 3) / 4 && k < MAX_K && q->zero_point >= 0 && q->zero_point <= 255 && isfinite(q->inv_scale) &&
           q->inv_scale > 0;
}

int bitfx_int8_conv(const bitfx_fconv_desc *d, const bitfx_int8_desc *q, const bitfx_fmaxpool_desc *pool, const float *x,
                    const int8_t *weights, const int32_t *correction, const float *scale, const float *bias, float *out) {
    if (!d || !q || !x || !weights || !correction || !scale || !bias || !out || !well_formed(d, q) || (d->channels_last && !pool))
        return BITFX_ERR_ARGUMENT;
    /* Rows and columns every tap reads, the convolution's padding and the last quad's columns included. */
    const int64_t last_row = (d->out_h - 1) * d->stride_h + (d->kernel_h - 1) * d->dilation_h + 1;
    const int64_t last_col = (d->out_w - 1) * d->stride_w + q->quads * 4;
    const int64_t rows = d->pad_top + d->height > last_row ? d->pad_top + d->height : last_row;
    const int64_t cols = d->pad_left + d->width > last_col ? d->pad_left + d->width : last_col;
    uint8_t *buffer = malloc((size_t)(d->batch * d->channels * rows * cols));
    if (!buffer) return BITFX_ERR_ALLOC;
    memset(buffer, (int)q->zero_point, (size_t)(d->batch * d->channels * rows * cols));
    const bitfx_int8_input in = {buffer, rows, cols, q->quads, weights, correction};
    const int vnni = has_vnni();
    quantize_task quantize = {d, q, x, &in, buffer, vnni};
    bitfx_parallel_for(d->batch * d->channels * d->height, bitfx_get_threads(), quantize_item, &quantize);
    const bitfx_fconv_job job = {d, x, 0, scale, bias, 0, out, d->channels * d->kernel_h * d->kernel_w, 0, 0, 0, 0, &in};
    bitfx_row_fn row = int8_row_portable;
#if defined(__x86_64__)
    if (vnni) row = bitfx_int8_row_vnni;
    else if (bitfx_get_isa() >= BITFX_ISA_AVX2) row = bitfx_int8_row_avx2;
#endif
    const int status = pool ? bitfx_conv_maxpool_rows(&job, pool, row, 0, out) : run_rows(&job, row);
    free(buffer);
    return status;
}
