/* What the dispatcher (kernels.c) and the per-ISA files (isa_*.c) share. */
#ifndef BITFX_INTERNAL_H
#define BITFX_INTERNAL_H

#include "bitfx_kernels.h"

/* One binary convolution call: the descriptor, its arrays (see bitfx_binary_conv) and sizes
 * derived once per call. */
typedef struct {
    const bitfx_bconv_desc *d;
    const uint64_t *x, *weights;
    const bitfx_bconv_pixel *pixels;
    const int64_t *kc, *threshold, *offsets; /* offsets: the `taps` table */
    const float *scale, *bias, *residual;
    const uint32_t *flip;
    void *out;
    int64_t k_words;     /* taps × group words = the reduction length in words */
    int64_t image_words; /* input words per image, border included */
    int64_t out_image;   /* packed output: 32-bit half-words per output image, border included */
    int64_t lanes;       /* channel lanes of a kc, scale, bias or threshold row: groups · blocks · BITFX_BLOCK */
} bitfx_bconv_job;

/* One float convolution call; `panel` rows are BITFX_FLOAT_CHUNK floats, one per (c, kh, kw).
 * With `stage_out` (the fused stem, stem.c; no residual) the epilogue writes output row oh of channel co
 * to stage_out[co − stage_channel0][oh − stage_row0] (rows of out_w floats, stage_rows per channel)
 * instead of `out`. */
typedef struct bitfx_int8_input bitfx_int8_input;
typedef struct {
    const bitfx_fconv_desc *d;
    const float *x, *weights, *scale, *bias, *residual;
    float *out;
    int64_t k; /* reduction length: channels per group × kh × kw */
    float *stage_out;
    int64_t stage_channel0, stage_row0, stage_rows;
    const bitfx_int8_input *int8; /* the int8 convolution (int8.c): its quantized input and weights */
    /* 1: the row function writes the fused stem's stage pixel-major instead, output row oh's pixel ow at
     * stage_out[((oh − stage_row0)·out_w + ow)·64], the block's 64 channels (those past out_channels
     * hold finite filler), and stem.c pools it with bitfx_maxpool_pixels_avx512 (AVX-512 rows only). */
    int64_t stage_pixels;
} bitfx_fconv_job;

/* The int8 convolution's operands: the input quantized to u8 with a border of the zero point (so
 * no tap is tested), `rows` × `cols` per (image, channel) plane, the convolution's padding at its
 * top left; s8 weights [block][c][kh][quad][64 channels][4 taps] (kernel columns in quads of 4,
 * zero past kernel_w); and per output channel zero_point · Σ w, subtracted from the u8 · s8 sums.
 * For the AVX2 row only (else 0): the same codes widened to 16 bits, the input as it is and the
 * weights [block][c][kh][quad][half][64 channels][2 taps] (int8_avx2.c). */
struct bitfx_int8_input {
    const uint8_t *x;
    int64_t rows, cols, quads;
    const int8_t *weights;
    const int32_t *correction;
    const uint16_t *x16;
    const int16_t *weights16;
};

/* Output row oh of image n, output channels 64·block … 64·block+63, through the epilogue: the
 * direct float kernel (bitfx_isa_ops.fconv_row) or an int8 row function; `stage` holds
 * bitfx_direct_stage_floats floats. */
typedef void (*bitfx_row_fn)(const bitfx_fconv_job *job, const float *block_weights, float *stage, int64_t n, int64_t oh, int64_t block);

/* The fused convolution + max pool driver (stem.c) over any row function. */
int bitfx_conv_maxpool_rows(const bitfx_fconv_job *job, const bitfx_fmaxpool_desc *pool, bitfx_row_fn row, const float *block_weights,
                            float *out);

/* fconv_direct_avx2.c: the direct float convolution's row on AVX2 (bitfx_ops_avx2.fconv_row). */
void bitfx_fconv_row_avx2(const bitfx_fconv_job *job, const float *block_weights, float *stage, int64_t n, int64_t oh, int64_t block);

/* int8_avx2.c (AVX2; call only when the CPU has it): an int8 output row from the 16-bit operands
 * (bitfx_int8_input.x16, .weights16), exact (VPMADDWD), and the quantization as bitfx_quantize_vnni's. */
void bitfx_int8_row_avx2(const bitfx_fconv_job *job, const float *block_weights, float *stage, int64_t n, int64_t oh, int64_t block);
void bitfx_quantize_avx2(const float *x, uint8_t *q, int64_t count, float inv_scale, float zero_point);

/* int8_vnni.c (AVX-512 VNNI; call only when the CPU has it): an int8 output row, and the
 * quantization of `count` floats to u8 (v = x·inv_scale + zero_point, clamped to 0 … 255, rounded to nearest even). */
void bitfx_int8_row_vnni(const bitfx_fconv_job *job, const float *block_weights, float *stage, int64_t n, int64_t oh, int64_t block);
void bitfx_quantize_vnni(const float *x, uint8_t *q, int64_t count, float inv_scale, float zero_point);

/* The widest rows the portable float max pool reduces over the kernel's rows first (portable.h). */
#define BITFX_POOL_ROW 1024

/* maxpool_pixels.c (AVX-512; call only when the CPU has it): the max pool `p` (one plane; its height,
 * width and pad_top are those of the rows held) over pixel-major rows, 64 floats per pixel, into
 * pixels out[(r·out_w + ow)·out_stride + c] for c < channels: the values and the order of
 * comparisons of bitfx_fmaxpool_row_portable for rows up to BITFX_POOL_ROW pixels wide. */
void bitfx_maxpool_pixels_avx512(const bitfx_fmaxpool_desc *p, const float *rows, float *out, int64_t out_stride, int64_t channels);

typedef struct {
    /* Pack row h of image n: every word of every pixel of that row. */
    void (*pack_row)(const bitfx_pack_desc *d, const float *x, uint64_t *out, int64_t n, int64_t h);
    /* Output pixels per tile of the binary convolution, at most (tiles are sized by bitfx_tiling_of). */
    int64_t tile_pixels;
    /* Tiles first .. last−1 (runs of output pixels, linear in the image) × channel block
     * `block` of group g of image n: accumulate, then the output transform. */
    void (*bconv_tiles)(const bitfx_bconv_job *job, int64_t n, int64_t g, int64_t block, int64_t first, int64_t last);
    /* Build the im2col panel of output pixels p0 .. p0+count−1 (count ≤ BITFX_FLOAT_CHUNK) of image n,
     * group g, into `panel`; then acc[tile][r][p] = Σ_k w[tile][k][r] · panel[k][p] for every tile
     * of the group, and the epilogue. */
    void (*fconv_chunk)(const bitfx_fconv_job *job, float *panel, int64_t n, int64_t g, int64_t p0, int64_t count);
    /* Optional (0 when the ISA has none: scalar): the direct float convolution of group 1, output row oh of image n,
     * output channels 64·block .. 64·block+63, weights laid out [block][k][64]; `stage` holds 64 × out_w floats. */
    void (*fconv_row)(const bitfx_fconv_job *job, const float *block_weights, float *stage, int64_t n, int64_t oh, int64_t block);
    /* The peak loop: `rounds` rounds of independent XOR+popcount+add. Returns the bit-MACs done. */
    double (*popcount_peak)(int64_t rounds, uint64_t seed);
    /* Output row r (plane r / out_h, row r % out_h) of a float max pool. */
    void (*fmaxpool_row)(const bitfx_fmaxpool_desc *d, const float *x, float *out, int64_t r);
    /* Output channels c0 .. c1−1 of every row of a float Gemm. */
    void (*fgemm_columns)(const bitfx_fgemm_desc *d, const float *x, const float *w, const float *bias, float *out, int64_t c0, int64_t c1);
    /* 1 when pack_row and bconv_tiles honour the descriptors' `channels_last` (NHWC float input of a
     * pack, NHWC float output and residual of a binary convolution); an ISA that leaves it 0 has those
     * calls run on the portable path instead, so a layout it does not know is never misread. */
    int channels_last;
} bitfx_isa_ops;

/* The ISA the kernels use now (kernels.c). */
const bitfx_isa_ops *bitfx_current_ops(void);

/* Floats of the direct float convolution's scratch `stage`: pixel-major tiles + 64 channel rows. */
static inline int64_t bitfx_direct_stage_floats(const bitfx_fconv_desc *d) { return 2 * BITFX_FLOAT_BLOCK * ((d->out_w + 15) / 16 * 16); }

/* Rows and columns of a packed tensor including its border. */
static inline int64_t bitfx_padded_h(const bitfx_packed_geom *g) { return g->pad_top + g->height + g->pad_bottom; }
static inline int64_t bitfx_padded_w(const bitfx_packed_geom *g) { return g->pad_left + g->width + g->pad_right; }

extern const bitfx_isa_ops bitfx_ops_scalar;
#if defined(__x86_64__)
extern const bitfx_isa_ops bitfx_ops_avx2;
extern const bitfx_isa_ops bitfx_ops_avx512;
#endif
#if defined(__aarch64__)
extern const bitfx_isa_ops bitfx_ops_neon;
#endif

/* The epilogue of the float convolution for one output channel and `count` consecutive pixels,
 * shared by every ISA (it is memory-bound): y = clamp(scale·acc + bias [+ residual]). */
static inline void bitfx_float_epilogue(const bitfx_fconv_job *job, const float *acc, int64_t n, int64_t co, int64_t p0, int64_t count) {
    const bitfx_fconv_desc *d = job->d;
    const int64_t plane = d->out_h * d->out_w;
    const int64_t index = (n * d->out_channels + co) * plane + p0;
    const float s = job->scale[co], b = job->bias[co];
    const float lo = (float)d->clamp_lo, hi = (float)d->clamp_hi;
    float *out = job->out + index;
    const float *res = d->has_residual ? job->residual + index : 0;
    if (job->stage_out) {
        const int64_t oh = p0 / d->out_w;
        out = job->stage_out + ((co - job->stage_channel0) * job->stage_rows + oh - job->stage_row0) * d->out_w + p0 % d->out_w;
        res = 0;
    }
    for (int64_t p = 0; p < count; ++p) {
        float y = acc[p] * s + b;
        if (res) y += res[p];
        y = y < lo ? lo : y;
        out[p] = y > hi ? hi : y;
    }
}

#endif
