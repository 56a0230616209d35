/* The int8 convolution's plain row loop (no intrinsics): int32 sums per (pixel, channel), the 4
 * taps of a quad summed per channel so the innermost loop runs over contiguous weights, written as
 * channel rows for the shared epilogue: the int8 row of the scalar ISA (and of CPUs without AVX2),
 * included by int8.c. */
#ifndef BITFX_INT8_ROW_H
#define BITFX_INT8_ROW_H

#include "internal.h"

static inline void bitfx_int8_row_plain(const bitfx_fconv_job *job, const float *block_weights, float *stage, int64_t n, int64_t oh,
                                        int64_t block) {
    const bitfx_fconv_desc *d = job->d;
    const bitfx_int8_input *in = job->int8;
    const int64_t stride = (d->out_w + 15) / 16 * 16;
    const uint8_t *image = in->x + n * d->channels * in->rows * in->cols;
    const int8_t *w = in->weights + block * d->channels * d->kernel_h * in->quads * 4 * BITFX_FLOAT_BLOCK;
    float *rows = stage + stride * BITFX_FLOAT_BLOCK;
    int32_t acc[BITFX_FLOAT_BLOCK];
    (void)block_weights;
    for (int64_t ow = 0; ow < d->out_w; ++ow) {
        for (int o = 0; o < BITFX_FLOAT_BLOCK; ++o) acc[o] = -in->correction[block * BITFX_FLOAT_BLOCK + o];
        for (int64_t c = 0; c < d->channels; ++c) {
            for (int64_t kh = 0; kh < d->kernel_h; ++kh) {
                const uint8_t *src = image + (c * in->rows + oh * d->stride_h + kh * d->dilation_h) * in->cols + ow * d->stride_w;
                const int8_t *wk = w + (c * d->kernel_h + kh) * in->quads * 4 * BITFX_FLOAT_BLOCK;
                for (int64_t q = 0; q < in->quads; ++q, wk += 4 * BITFX_FLOAT_BLOCK) {
                    const int32_t x0 = src[4 * q], x1 = src[4 * q + 1], x2 = src[4 * q + 2], x3 = src[4 * q + 3];
                    for (int o = 0; o < BITFX_FLOAT_BLOCK; ++o)
                        acc[o] += x0 * wk[4 * o] + x1 * wk[4 * o + 1] + x2 * wk[4 * o + 2] + x3 * wk[4 * o + 3];
                }
            }
        }
        for (int o = 0; o < BITFX_FLOAT_BLOCK; ++o) rows[o * stride + ow] = (float)acc[o];
    }
    for (int64_t o = 0; o < BITFX_FLOAT_BLOCK && block * BITFX_FLOAT_BLOCK + o < d->out_channels; ++o)
        bitfx_float_epilogue(job, rows + o * stride, n, block * BITFX_FLOAT_BLOCK + o, oh * d->out_w, d->out_w);
}

#endif
