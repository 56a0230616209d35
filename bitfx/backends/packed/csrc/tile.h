/* The tile of the binary convolution, shared by every ISA file (compiled with each file's target):
 * how a plane's output pixels are cut into tiles, the input pointers of a tile's pixels (from the
 * pixel table computed when the layer is bound), and the loop over the tiles of a call. */
#ifndef BITFX_TILE_H
#define BITFX_TILE_H

#include "internal.h"

#define BITFX_TILE_PIXELS 4     /* output pixels per tile of the portable and AVX2 paths */
#define BITFX_MAX_TILE_PIXELS 8 /* … and of the AVX-512 path */

/* A plane of `plane` output pixels cut into `count` = ⌈plane / max⌉ tiles of `size` or size − 1
 * pixels (the first `full` tiles have `size`), so that every pixel is computed once: 7×7 = 49 is
 * 7 tiles of 7, 14×14 = 196 is 21 tiles of 8 and 4 of 7. */
typedef struct {
    int64_t count, size, full;
} bitfx_tiling;

static inline bitfx_tiling bitfx_tiling_of(int64_t plane, int64_t max_pixels) {
    const int64_t count = (plane + max_pixels - 1) / max_pixels, size = (plane + count - 1) / count;
    return (bitfx_tiling){count, size, plane - count * (size - 1)};
}

/* First output pixel (linear in the plane) of tile t. */
static inline int64_t bitfx_tile_start(const bitfx_tiling *t, int64_t tile) {
    return tile <= t->full ? tile * t->size : t->full * t->size + (tile - t->full) * (t->size - 1);
}

/* What a tile writes. The AVX-512 and AVX2 tiles are compiled once per kind and the kind is chosen
 * when the call starts, so no tile tests it. */
enum { BITFX_OUT_BITS, BITFX_OUT_F, BITFX_OUT_F_RESIDUAL, BITFX_OUT_F_CLAMP, BITFX_OUT_F_RESIDUAL_CLAMP, BITFX_OUT_KINDS };

static inline int bitfx_out_kind(const bitfx_bconv_desc *d) {
    const int clamp = d->clamp_lo > -__builtin_inf() || d->clamp_hi < __builtin_inf();
    return d->out_mode == BITFX_OUT_PACKED ? BITFX_OUT_BITS : BITFX_OUT_F + (d->has_residual ? 1 : 0) + (clamp ? 2 : 0);
}
#define BITFX_KIND_RESIDUAL(kind) ((kind) == BITFX_OUT_F_RESIDUAL || (kind) == BITFX_OUT_F_RESIDUAL_CLAMP)
#define BITFX_KIND_CLAMP(kind) ((kind) == BITFX_OUT_F_CLAMP || (kind) == BITFX_OUT_F_RESIDUAL_CLAMP)

/* The input pointer of each pixel of a tile of `count` pixels starting at q0 (image n, group g);
 * the slots past `count` repeat its last pixel. */
typedef struct {
    const uint64_t *px[BITFX_MAX_TILE_PIXELS];
} bitfx_tile;

static inline void bitfx_tile_pixels(const bitfx_bconv_job *job, int64_t n, int64_t g, int64_t q0, int64_t count, int pixels,
                                     bitfx_tile *tile) {
    const uint64_t *image = job->x + n * job->image_words + g * job->d->group_words;
    for (int j = 0; j < pixels; ++j) tile->px[j] = image + job->pixels[q0 + (j < count ? j : count - 1)].in;
}

/* Defines `bconv_tiles` (see bitfx_isa_ops) as a loop over `tile_function` (tiles of at most
 * `pixels` output pixels, sized by bitfx_tiling_of), which the compiler inlines. */
#define BITFX_TILE_LOOP(tile_function, pixels)                                                                              \
    static void bconv_tiles(const bitfx_bconv_job *job, int64_t n, int64_t g, int64_t block, int64_t first, int64_t last) { \
        const bitfx_tiling tiling = bitfx_tiling_of(job->d->out_h * job->d->out_w, (pixels));                               \
        for (int64_t t = first; t < last; ++t)                                                                              \
            tile_function(job, n, g, block, bitfx_tile_start(&tiling, t), t < tiling.full ? tiling.size : tiling.size - 1); \
    }

#endif
