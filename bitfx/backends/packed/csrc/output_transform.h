/* The output transform of the binary convolution, in one place for every ISA file: from the
 * exact ±1 dot products d of a tile to the float output y = clamp(scale·d + bias [+ residual])
 * (NCHW, or NHWC with the descriptor's `channels_last`) or to packed bits (d < threshold) XOR flip
 * (NHWC). The portable path (and AVX2 for huge reductions) calls `bitfx_bconv_epilogue`; the AVX2 and
 * AVX-512 paths compute the comparisons and the float values in registers (as `bitfx_binary_float`
 * does) and store bits with `bitfx_store_packed_bits`. */
#ifndef BITFX_OUTPUT_TRANSFORM_H
#define BITFX_OUTPUT_TRANSFORM_H

#include "tile.h"

/* The float epilogue of the binary convolution for one output channel: y from the exact
 * integer dot product d, as onnxruntime computes the op's function body (Mul, then Add). */
static inline float bitfx_binary_float(int64_t d, float scale, float bias) {
    float product = (float)d * scale;
    return product + bias;
}

/* Packed output of `count` pixels starting at q0: bits[j] holds (d < threshold) of the block's
 * BITFX_BLOCK channels of pixel j, before the flip. groups == 1 here (checked by the caller), so
 * block b is half-word b of the pixel; the half-word past an odd last block is cleared. */
static inline void bitfx_store_packed_bits(const bitfx_bconv_job *job, int64_t n, int64_t block, int64_t q0, int64_t count,
                                           const uint32_t *bits) {
    const uint32_t flip = job->flip[block];
    uint32_t *image = (uint32_t *)job->out + n * job->out_image + block;
    const int clear_next = block == job->d->blocks - 1 && (job->d->blocks & 1);
    for (int64_t j = 0; j < count; ++j) {
        uint32_t *pixel = image + job->pixels[q0 + j].out;
        pixel[0] = bits[j] ^ flip;
        if (clear_next) pixel[1] = 0;
    }
}

/* One float output of the portable transform: clamp(scale·d + bias [+ *residual], lo, hi). */
static inline float bitfx_binary_output(const bitfx_bconv_job *job, int64_t dot, int64_t lane, const float *residual, float lo, float hi) {
    float y = bitfx_binary_float(dot, job->scale[lane], job->bias[lane]);
    if (residual) y += *residual;
    y = y < lo ? lo : y;
    return y > hi ? hi : y;
}

/* The output transform from exact dot products dots[j][lane] (any ISA may call it). */
static inline void bitfx_bconv_epilogue(const bitfx_bconv_job *job, int64_t n, int64_t g, int64_t block, int64_t q0, int64_t count,
                                        const int64_t dots[BITFX_TILE_PIXELS][BITFX_BLOCK]) {
    const bitfx_bconv_desc *d = job->d;
    const int64_t lane0 = (g * d->blocks + block) * BITFX_BLOCK;
    if (d->out_mode == BITFX_OUT_PACKED) {
        uint32_t bits[BITFX_TILE_PIXELS];
        for (int64_t j = 0; j < count; ++j) {
            bits[j] = 0;
            for (int l = 0; l < BITFX_BLOCK; ++l) bits[j] |= (uint32_t)(dots[j][l] < job->threshold[lane0 + l]) << l;
        }
        bitfx_store_packed_bits(job, n, block, q0, count, bits);
        return;
    }
    const int64_t per_group = d->out_channels / d->groups, plane = d->out_h * d->out_w;
    const float lo = (float)d->clamp_lo, hi = (float)d->clamp_hi;
    if (d->channels_last) { /* NHWC: a pixel's channels of the block are contiguous */
        const int64_t lanes = per_group - block * BITFX_BLOCK < BITFX_BLOCK ? per_group - block * BITFX_BLOCK : BITFX_BLOCK;
        for (int64_t j = 0; j < count; ++j) {
            const int64_t index = (n * plane + q0 + j) * d->out_channels + g * per_group + block * BITFX_BLOCK;
            float *out = (float *)job->out + index;
            for (int64_t l = 0; l < lanes; ++l)
                out[l] = bitfx_binary_output(job, dots[j][l], lane0 + l, d->has_residual ? job->residual + index + l : 0, lo, hi);
        }
        return;
    }
    for (int l = 0; l < BITFX_BLOCK && block * BITFX_BLOCK + l < per_group; ++l) {
        const int64_t index = (n * d->out_channels + g * per_group + block * BITFX_BLOCK + l) * plane + q0;
        float *out = (float *)job->out + index;
        for (int64_t j = 0; j < count; ++j)
            out[j] = bitfx_binary_output(job, dots[j][l], lane0 + l, d->has_residual ? job->residual + index + j : 0, lo, hi);
    }
}

#endif
