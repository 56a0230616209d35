/* bitfx packed-bit kernels: the C API the Python executor calls through ctypes.
 *
 * Bit convention (docs/binary-format.md): a ±1 value is one bit, bit 1 = −1, bit 0 = +1;
 * channels are packed innermost into little-endian uint64 words, channel c of a group is bit
 * c % 64 of word c / 64 of that group; bits past the last real channel are 0.
 *
 * Packed activations are NHWC with a border: batch × (pad_top + height + pad_bottom) ×
 * (pad_left + width + pad_right) × words. The border holds the padding value's bits, so the
 * kernels never test bounds.
 *
 * Every struct field is 64 bits wide so the ctypes mirror in _native.py has no padding rules
 * to get wrong.
 */
#ifndef BITFX_KERNELS_H
#define BITFX_KERNELS_H

#include <stdint.h>

/* AVX2 and AVX-512 exist on x86-64 only, NEON on AArch64 only; scalar runs everywhere. */
enum bitfx_isa { BITFX_ISA_SCALAR = 0, BITFX_ISA_AVX2 = 1, BITFX_ISA_AVX512 = 2, BITFX_ISA_NEON = 3, BITFX_ISA_COUNT = 4 };
enum bitfx_out_mode { BITFX_OUT_FLOAT = 0, BITFX_OUT_PACKED = 1 };

/* Output channels are processed in blocks of this many (weights, scales, thresholds and
 * border corrections are laid out per block, zero-padded past the last real channel). */
#define BITFX_BLOCK 32
/* Output channels per tile of the float convolution (its weights are laid out per tile). */
#define BITFX_FLOAT_TILE 4
/* Output pixels per chunk of the float convolution. */
#define BITFX_FLOAT_CHUNK 64
/* Output channels per block of the direct float convolution (weights [block][k][64], zero-padded). */
#define BITFX_FLOAT_BLOCK 64

typedef struct {
    int64_t batch, height, width;
    int64_t pad_top, pad_left, pad_bottom, pad_right;
    int64_t words; /* uint64 words per pixel */
} bitfx_packed_geom;

/* Float activations → packed NHWC (interior only; see bitfx_fill_border). The float input is NCHW,
 * or NHWC with `channels_last` (a pixel's channels contiguous: a word is 64 contiguous floats). */
typedef struct {
    int64_t channels, groups, group_words; /* words per pixel = groups * group_words */
    bitfx_packed_geom out;
    int64_t channels_last;
} bitfx_pack_desc;

/* XNOR-popcount convolution on a packed input.
 * d = K − 2·popcount(x ⊕ w) − correction, the exact ±1 dot product (the correction, folded
 * into the `kc` table = K − correction per border pattern and channel lane, removes what padded
 * taps added).
 * Float output: y = clamp((scale·d + bias) [+ residual], lo, hi), NCHW, or NHWC with `channels_last`
 * (the output and the residual: a pixel's channels contiguous).
 * Packed output: bit = (d < threshold) XOR flip, into the interior of `out` geometry. */
typedef struct {
    bitfx_packed_geom in;
    int64_t groups, group_words;
    int64_t kernel_h, kernel_w, stride_h, stride_w, dilation_h, dilation_w;
    int64_t pad_top, pad_left; /* the convolution's own padding, ≤ the input border */
    int64_t out_h, out_w, out_channels;
    int64_t blocks; /* BITFX_BLOCK-channel blocks per group */
    int64_t patterns; /* rows of the kc table */
    int64_t out_mode;
    int64_t has_residual;
    double clamp_lo, clamp_hi;
    bitfx_packed_geom out; /* BITFX_OUT_PACKED only */
    int64_t channels_last; /* BITFX_OUT_FLOAT only: the output and the residual are NHWC */
} bitfx_bconv_desc;

/* One output pixel of a binary convolution, computed when the layer is bound so the tiles do no
 * index arithmetic: `in`, the word offset of its first input word (tap (0, 0), group 0) from the
 * start of its image; `out`, packed output only, the 32-bit half-word offset of the pixel from the
 * start of its output image; `kc`, the offset of its border pattern's row in the kc table. */
typedef struct {
    int64_t in, out, kc;
} bitfx_bconv_pixel;

/* Max pool on packed data: max of ±1 values is AND of the bits (bit 1 = −1). The input
 * border must hold ones (−1) for real channels, the identity of AND, so padded taps are
 * ignored as ONNX MaxPool ignores them. */
typedef struct {
    bitfx_packed_geom in, out;
    int64_t kernel_h, kernel_w, stride_h, stride_w, dilation_h, dilation_w;
    int64_t pad_top, pad_left;
    int64_t out_h, out_w;
} bitfx_bmaxpool_desc;

/* Float convolution (NCHW, im2col panels × tiled weights) with the same epilogue as the
 * binary one: y = clamp(scale·acc + bias [+ residual], lo, hi). With `block_weights` (the same
 * weights laid out [block][k][BITFX_FLOAT_BLOCK]; may be null), group 1 and zero padding, an ISA
 * with a direct kernel (AVX-512: 6 pixels × 64 channels; AVX2: 6 pixels × 16 channels, four times) uses it
 * instead: no im2col. */
typedef struct {
    int64_t batch, channels, height, width;
    int64_t groups, out_channels, tiles; /* BITFX_FLOAT_TILE-channel tiles per group */
    int64_t kernel_h, kernel_w, stride_h, stride_w, dilation_h, dilation_w;
    int64_t pad_top, pad_left, out_h, out_w;
    int64_t has_residual;
    double pad_value, clamp_lo, clamp_hi;
    int64_t channels_last; /* the output is NHWC: only with a fused max pool (bitfx_float_conv_maxpool, bitfx_int8_conv) */
} bitfx_fconv_desc;

/* Float matrix product with constant weights (ONNX Gemm): out[n][c] = alpha·Σ_k x[n][k]·w[k][c] + beta·bias[c]
 * (w is K × C, transposed at load time so channels are contiguous). */
typedef struct {
    int64_t rows, k, channels, has_bias;
    double alpha, beta;
} bitfx_fgemm_desc;

/* Float max pool, NCHW, padded taps ignored. */
typedef struct {
    int64_t planes, height, width; /* planes = batch × channels */
    int64_t kernel_h, kernel_w, stride_h, stride_w, dilation_h, dilation_w;
    int64_t pad_top, pad_left, out_h, out_w;
} bitfx_fmaxpool_desc;

/* The int8 convolution (an opt-in replacement of a float one, group 1, kernel columns undilated):
 * the input is quantized per tensor to u8, q = clamp(round_even(x·inv_scale + zero_point), 0, 255),
 * weights are s8 per output channel, u8 · s8 products are summed in int32, and the epilogue is the
 * float convolution's with the dequantizing multiplier folded into `scale`:
 * y = clamp(scale_c·(Σ q·w − zero_point·Σ w) + bias_c, lo, hi). */
typedef struct {
    double inv_scale;   /* u8 steps per input unit (1 / the input's scale) */
    int64_t zero_point; /* the u8 value of 0.0, 0 … 255 */
    int64_t quads;      /* kernel columns in groups of 4: ceil(kernel_w / 4) */
} bitfx_int8_desc;

/* Global average pool of float activations (ONNX GlobalAveragePool, ReduceMean over H and W):
 * out[n][c] = (float)(Σ_p x[n][c][p] / pixels), the sum in double, pixels in row-major order; x NCHW, or
 * NHWC with `channels_last`; out is batch × channels floats. */
typedef struct {
    int64_t batch, channels, pixels, channels_last;
} bitfx_avgpool_desc;

/* One prepared kernel call of a table run by bitfx_run_calls: `kernel` is the entry point
 * (enum bitfx_call_kernel), `args` its arguments in its prototype's order (unused ones null). */
#define BITFX_CALL_ARGS 12
typedef struct {
    int64_t kernel;
    const void *args[BITFX_CALL_ARGS];
} bitfx_call;
enum bitfx_call_kernel {
    BITFX_CALL_PACK = 0,
    BITFX_CALL_FILL_BORDER = 1,
    BITFX_CALL_BINARY_CONV = 2,
    BITFX_CALL_BINARY_MAXPOOL = 3,
    BITFX_CALL_FLOAT_CONV = 4,
    BITFX_CALL_FLOAT_MAXPOOL = 5,
    BITFX_CALL_FLOAT_CONV_MAXPOOL = 6,
    BITFX_CALL_FLOAT_GEMM = 7,
    BITFX_CALL_INT8_CONV = 8,
    BITFX_CALL_GLOBAL_AVGPOOL = 9,
    BITFX_CALL_KINDS = 10
};

/* What every kernel entry point returns: 0 when it did all its work, else why it did none. */
enum bitfx_status { BITFX_OK = 0, BITFX_ERR_ALLOC = 1, BITFX_ERR_ARGUMENT = 2 };

int bitfx_isa_supported(int64_t isa);
int64_t bitfx_best_isa(void);
int bitfx_set_isa(int64_t isa); /* 0, or −1 when this CPU cannot run it */
int64_t bitfx_get_isa(void);
void bitfx_set_threads(int64_t threads);
int64_t bitfx_get_threads(void);
int64_t bitfx_max_threads(void);

int bitfx_pack(const bitfx_pack_desc *d, const float *x, uint64_t *out);
int bitfx_fill_border(const bitfx_packed_geom *g, const uint64_t *pad_pixel, uint64_t *buffer);
/* `taps[k]`: word offset of reduction word k (kh, kw, word) from a pixel's first input word;
 * `pixels`: one entry per output pixel of an image (out_h · out_w). */
int bitfx_binary_conv(const bitfx_bconv_desc *d, const uint64_t *x, const uint64_t *weights, const int64_t *taps,
                      const bitfx_bconv_pixel *pixels, const int64_t *kc, const float *scale, const float *bias, const float *residual,
                      const int64_t *threshold, const uint32_t *flip, void *out);
int bitfx_binary_maxpool(const bitfx_bmaxpool_desc *d, const uint64_t *x, uint64_t *out);
int bitfx_float_conv(const bitfx_fconv_desc *d, const float *x, const float *weights, const float *block_weights,
                     const float *scale, const float *bias, const float *residual, float *out);
int bitfx_float_maxpool(const bitfx_fmaxpool_desc *d, const float *x, float *out);
/* The float convolution (no residual) then the float max pool `pool` over its output (pool->planes =
 * batch × out_channels, its height × width = the convolution's out_h × out_w), fused: out is the pool's,
 * NCHW, or NHWC when d->channels_last. */
int bitfx_float_conv_maxpool(const bitfx_fconv_desc *d, const bitfx_fmaxpool_desc *pool, const float *x, const float *weights,
                             const float *block_weights, const float *scale, const float *bias, float *out);
int bitfx_float_gemm(const bitfx_fgemm_desc *d, const float *x, const float *weights, const float *bias, float *out);
/* The int8 convolution of `d` (scale/bias as above), then, when `pool` is not null, that float max
 * pool over its output in the same pass (bitfx_float_conv_maxpool). Weights [block][c][kh][quad][64][4]
 * s8, correction[block·64 + c] = zero_point · Σ w of channel c. AVX-512 VNNI when the CPU has it and
 * the ISA is AVX-512, else a portable loop with the same integer sums. */
int bitfx_int8_conv(const bitfx_fconv_desc *d, const bitfx_int8_desc *q, const bitfx_fmaxpool_desc *pool, const float *x,
                    const int8_t *weights, const int32_t *correction, const float *scale, const float *bias, float *out);
int bitfx_global_avgpool(const bitfx_avgpool_desc *d, const float *x, float *out);
/* Runs calls[0 .. count) in order and stops at the first that fails: returns its status and stores its
 * index in *failed (count when every call succeeded). */
int bitfx_run_calls(const bitfx_call *calls, int64_t count, int64_t *failed);
/* Runs `rounds` rounds of the XOR+popcount+add inner loop of the current ISA once per thread
 * (register operands only; work-shared like the kernels) and returns how many bit-MACs were
 * done; time it to get the peak. */
double bitfx_popcount_peak(int64_t rounds);

#endif
