/* The int8 convolution (bitfx_int8_conv): quantizes the input once per call into a u8 buffer with
 * a border of the zero point, then runs an int8 row function over every (image, output row,
 * 64-channel block), or the fused max pool driver of stem.c. The row function is AVX-512 VNNI
 * (int8_vnni.c) when the CPU has it and the ISA in use is AVX-512 (with an NHWC fused max pool it
 * fills the stage pixel-major), else the AVX2 VPMADDWD row
 * (int8_avx2.c, on operands widened to 16 bits here) when the ISA in use is AVX2 or AVX-512, else
 * the plain loop of int8_row.h; all compute the same int32 sums, so the outputs do not depend on
 * the path. */
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

/* The ISA in use is AVX2, or AVX-512 on a CPU without VNNI. */
static int has_avx2(void) {
#if defined(__x86_64__)
    return bitfx_get_isa() == BITFX_ISA_AVX2 || bitfx_get_isa() == BITFX_ISA_AVX512;
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
    int vnni, avx2;
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
    if (t->avx2) {
        bitfx_quantize_avx2(src, dst, d->width, (float)t->q->inv_scale, (float)t->q->zero_point);
        return;
    }
#endif
    quantize_portable(src, dst, d->width, (float)t->q->inv_scale, (float)t->q->zero_point);
}

#if defined(__x86_64__)
/* The AVX2 row's operands: the u8 buffer as u16, and the weights [..][quad][64][4] as
 * [..][quad][half][64][2] int16. Returns 0 when out of memory. */
static int widen(const uint8_t *x, int64_t count, const int8_t *weights, int64_t quads_total, uint16_t **x16,
                 int16_t **weights16) {
    *x16 = malloc((size_t)count * sizeof(uint16_t));
    *weights16 = aligned_alloc(64, (size_t)quads_total * 256 * sizeof(int16_t));
    if (!*x16 || !*weights16) return 0;
    for (int64_t i = 0; i < count; ++i) (*x16)[i] = x[i];
    for (int64_t g = 0; g < quads_total; ++g)
        for (int half = 0; half < 2; ++half)
            for (int o = 0; o < 64; ++o)
                for (int t = 0; t < 2; ++t)
                    (*weights16)[g * 256 + half * 128 + 2 * o + t] = weights[g * 256 + 4 * o + 2 * half + t];
    return 1;
}
#endif

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
    float **scratch = bitfx_thread_scratch(threads, bytes, bytes);
    if (!scratch) return BITFX_ERR_ALLOC;
    rows_task task = {job, row, scratch, blocks};
    bitfx_parallel_for(d->batch * d->out_h * blocks, threads, rows_item, &task);
    bitfx_free_thread_scratch(scratch, threads);
    return BITFX_OK;
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
    const int vnni = has_vnni(), avx2 = !vnni && has_avx2();
    const bitfx_int8_input plain = {buffer, rows, cols, q->quads, weights, correction, 0, 0};
    quantize_task quantize = {d, q, x, &plain, buffer, vnni, avx2};
    bitfx_parallel_for(d->batch * d->channels * d->height, bitfx_get_threads(), quantize_item, &quantize);
    bitfx_row_fn row = int8_row_portable;
    uint16_t *x16 = 0;
    int16_t *weights16 = 0;
    int status = BITFX_OK;
#if defined(__x86_64__)
    if (vnni) row = bitfx_int8_row_vnni;
    else if (avx2) {
        row = bitfx_int8_row_avx2;
        const int64_t blocks = (d->out_channels + BITFX_FLOAT_BLOCK - 1) / BITFX_FLOAT_BLOCK;
        if (!widen(buffer, d->batch * d->channels * rows * cols, weights, blocks * d->channels * d->kernel_h * q->quads, &x16,
                   &weights16))
            status = BITFX_ERR_ALLOC;
    }
#endif
    const bitfx_int8_input in = {buffer, rows, cols, q->quads, weights, correction, x16, weights16};
    /* The VNNI row fills a fused NHWC stem's stage pixel-major, pooled in the order of the portable
     * pool for rows up to BITFX_POOL_ROW wide (bitfx_maxpool_pixels_avx512). */
    const int64_t pixels = vnni && pool && d->channels_last && d->out_w <= BITFX_POOL_ROW;
    const bitfx_fconv_job job = {d, x, 0, scale, bias, 0, out, d->channels * d->kernel_h * d->kernel_w, 0, 0, 0, 0, &in, pixels};
    if (status == BITFX_OK) status = pool ? bitfx_conv_maxpool_rows(&job, pool, row, 0, out) : run_rows(&job, row);
    free(x16);
    free(weights16);
    free(buffer);
    return status;
}
