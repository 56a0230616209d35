/* The tile of the binary convolution, shared by every ISA file (compiled with each file's target):
 * the output pixels of a tile, the input pointers of each, and the loop over the tiles of a call. */
#ifndef BITFX_TILE_H
#define BITFX_TILE_H

#include "internal.h"

#define BITFX_TILE_PIXELS 4     /* output pixels per tile of the portable and AVX2 paths */
#define BITFX_MAX_TILE_PIXELS 8 /* … and of the AVX-512 path */

/* Output coordinates and first input word (group g) of each pixel of a tile; a short tile
 * repeats its last pixel. */
typedef struct {
    const uint64_t *px[BITFX_MAX_TILE_PIXELS];
    int64_t oh[BITFX_MAX_TILE_PIXELS], ow[BITFX_MAX_TILE_PIXELS];
} bitfx_tile;

static inline void bitfx_tile_pixels(const bitfx_bconv_job *job, int64_t n, int64_t g, int64_t oh, int64_t ow, int64_t count, int pixels,
                                     bitfx_tile *tile) {
    const bitfx_bconv_desc *d = job->d;
    const int64_t hp = bitfx_padded_h(&d->in), wp = bitfx_padded_w(&d->in);
    const int64_t row0 = d->in.pad_top - d->pad_top, col0 = d->in.pad_left - d->pad_left;
    const uint64_t *image = job->x + n * hp * wp * d->in.words + g * d->group_words;
    for (int j = 0; j < pixels; ++j) {
        tile->oh[j] = oh, tile->ow[j] = ow;
        tile->px[j] = image + ((row0 + oh * d->stride_h) * wp + col0 + ow * d->stride_w) * d->in.words;
        if (j + 1 < count && ++ow == d->out_w) ow = 0, ++oh;
    }
}

/* Defines `bconv_tiles` (see bitfx_isa_ops) as a loop over `tile_function` (tiles of `pixels`
 * output pixels), which the compiler inlines. */
#define BITFX_TILE_LOOP(tile_function, pixels)                                                                              \
    static void bconv_tiles(const bitfx_bconv_job *job, int64_t n, int64_t g, int64_t block, int64_t first, int64_t last) { \
        const int64_t plane = job->d->out_h * job->d->out_w, width = job->d->out_w;                                         \
        int64_t q0 = first * (pixels), oh = q0 / width, ow = q0 % width;                                                  \
        for (int64_t t = first; t < last; ++t, q0 += (pixels)) {                                                            \
            tile_function(job, n, g, block, q0, oh, ow, plane - q0 < (pixels) ? plane - q0 : (pixels));                    \
            for (ow += (pixels); ow >= width; ow -= width) ++oh;                                                            \
        }                                                                                                                   \
    }

#endif
