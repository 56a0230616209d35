/* Global average pool (bitfx_global_avgpool): the mean of every (image, channel) plane, NCHW or
 * channels-last input. Sums are kept in double, so the result is the mean of the float32 inputs
 * rounded once to float32 (up to the double sum's rounding, about 2^-53 per addition), whatever
 * the order; the order is fixed anyway (pixels in row-major order, in 4 interleaved partial sums
 * for NCHW planes). Work items are runs of channels of one image. */
#include "internal.h"
#include "pool.h"

#define AVGPOOL_CHANNELS 256 /* channels per work item */

typedef struct {
    const bitfx_avgpool_desc *d;
    const float *x;
    float *out;
    int64_t blocks; /* channel blocks per image */
} avgpool_task;

static double plane_sum(const float *x, int64_t pixels) {
    double a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    int64_t p = 0;
    for (; p + 4 <= pixels; p += 4) {
        a0 += x[p];
        a1 += x[p + 1];
        a2 += x[p + 2];
        a3 += x[p + 3];
    }
    for (; p < pixels; ++p) a0 += x[p];
    return (a0 + a1) + (a2 + a3);
}

static void avgpool_item(void *ctx, int64_t item, int64_t worker) {
    const avgpool_task *t = ctx;
    const bitfx_avgpool_desc *d = t->d;
    (void)worker;
    const int64_t n = item / t->blocks, c0 = item % t->blocks * AVGPOOL_CHANNELS;
    const int64_t c1 = c0 + AVGPOOL_CHANNELS < d->channels ? c0 + AVGPOOL_CHANNELS : d->channels;
    const float *image = t->x + n * d->channels * d->pixels;
    float *out = t->out + n * d->channels;
    if (!d->channels_last) {
        for (int64_t c = c0; c < c1; ++c)
            out[c] = (float)(plane_sum(image + c * d->pixels, d->pixels) / (double)d->pixels);
        return;
    }
    double sum[AVGPOOL_CHANNELS] = {0};
    for (int64_t p = 0; p < d->pixels; ++p) {
        const float *pixel = image + p * d->channels;
        for (int64_t c = c0; c < c1; ++c) sum[c - c0] += pixel[c];
    }
    for (int64_t c = c0; c < c1; ++c) out[c] = (float)(sum[c - c0] / (double)d->pixels);
}

int bitfx_global_avgpool(const bitfx_avgpool_desc *d, const float *x, float *out) {
    if (!d || !x || !out || d->batch < 0 || d->channels < 0 || d->pixels < 1) return BITFX_ERR_ARGUMENT;
    avgpool_task task = {d, x, out, (d->channels + AVGPOOL_CHANNELS - 1) / AVGPOOL_CHANNELS};
    bitfx_parallel_for(d->batch * task.blocks, bitfx_get_threads(), avgpool_item, &task);
    return BITFX_OK;
}
