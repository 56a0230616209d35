"""Scale match: rescale training images so their object sizes follow a target set's size distribution.

A detector pre-trained on one set (say COCO people, tens to hundreds of pixels) transfers poorly to
a set of tiny objects (TinyPerson, a few pixels). Scale match resizes each source image so that the
size s = √(w·h) of its objects is drawn from the target set's distribution of s:

    target histogram:  `bins` bins over the target sizes; the smallest and the largest 1/bins of
                       the mass each get a bin of their own (so outliers do not stretch the bins),
                       the middle is split into `bins` − 2 equal-width bins;
    per image:         src = geometric mean of the image's box sizes,
    ScaleMatch:        dst ~ histogram (bin by its mass, then uniform inside the bin),
    MonotoneScaleMatch: dst = the target size at the quantile of src among the *source* object sizes
                       (piecewise linear inside each bin), so the order of sizes is kept;
    scale = dst / src, clipped to `scale_range`; image and boxes resized by it, boxes narrower or
    shorter than 2 px dropped; an image with no boxes, or none left, gets `default_scale` (boxes kept).
    MonotoneScaleMatch extends its last bin linearly to sizes above the largest source size.

The transforms are numpy only (bilinear resize included) so that data pipelines can use them
without torch. Boxes are (x, y, w, h) arrays of shape (N, 4); images are (H, W) or (H, W, C).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bitfx.eval.boxes import as_boxes, box_area

MIN_BOX_SIDE = 2.0


@dataclass(frozen=True)
class SizeDistribution:
    """A histogram of object sizes: `edges` (bins + 1, increasing) and the `mass` of each bin (sums to 1)."""

    edges: np.ndarray
    mass: np.ndarray


def box_sizes(boxes: np.ndarray) -> np.ndarray:
    """s = √(w·h) of each (x, y, w, h) box."""
    return np.sqrt(box_area(as_boxes(boxes)))


def size_distribution(sizes: np.ndarray, bins: int = 100, tail_mass: float | None = None) -> SizeDistribution:
    """The target histogram of `sizes` (non-ignored target boxes); `tail_mass` defaults to 2 / bins,
    split evenly between a bin for the smallest and a bin for the largest sizes."""
    sizes = np.sort(np.asarray(sizes, np.float64).reshape(-1))
    sizes = sizes[sizes > 0]
    if len(sizes) == 0 or bins < 3:
        raise ValueError(f"size_distribution needs positive sizes and bins ≥ 3; got {len(sizes)} sizes, {bins} bins")
    tail = 2.0 / bins if tail_mass is None else tail_mass
    n = len(sizes)
    lo, hi = int(n * tail / 2), int(n * (1 - tail / 2))
    counts, edges = np.histogram(sizes[lo:hi], bins=bins - 2)
    counts = np.concatenate([[lo], counts, [n - hi]])
    edges = np.concatenate([[sizes[0]], edges, [sizes[-1]]])
    return SizeDistribution(edges, counts / n)


def sample_size(distribution: SizeDistribution, rng: np.random.Generator) -> float:
    """One size drawn from the histogram: a bin by its mass, then uniformly inside it."""
    cumulative = np.cumsum(distribution.mass)
    index = int(np.flatnonzero(rng.uniform() <= cumulative + 1e-6)[0])
    low, high = distribution.edges[index], distribution.edges[index + 1]
    return float(low + (high - low) * rng.uniform())


def resize_bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of an (H, W) or (H, W, C) array, sampling at pixel centres; keeps the dtype."""
    h, w = image.shape[:2]
    ys = np.clip((np.arange(height) + 0.5) * h / height - 0.5, 0, h - 1)
    xs = np.clip((np.arange(width) + 0.5) * w / width - 0.5, 0, w - 1)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    fy, fx = ys - y0, xs - x0
    if image.ndim == 3:
        fy, fx = fy[:, None, None], fx[None, :, None]
    else:
        fy, fx = fy[:, None], fx[None, :]
    src = image.astype(np.float64)
    top = src[y0][:, x0] * (1 - fx) + src[y0][:, x1] * fx
    bottom = src[y1][:, x0] * (1 - fx) + src[y1][:, x1] * fx
    out = top * (1 - fy) + bottom * fy
    if np.issubdtype(image.dtype, np.integer):
        out = np.rint(out)
    return out.astype(image.dtype)


def _geometric_mean_size(boxes: np.ndarray) -> float | None:
    sizes = box_sizes(boxes)
    sizes = sizes[sizes > 0]
    return float(np.exp(np.log(sizes).mean())) if len(sizes) else None


@dataclass(kw_only=True)
class _Rescale:
    """What both transforms share: clip the scale, resize image and boxes, drop boxes below 2 px."""

    scale_range: tuple[float, float] = (0.0, 2.0)
    default_scale: float = 1.0
    clip: bool = True

    def _bounded(self, scale: float) -> float:
        low, high = self.scale_range
        if low < scale < high:
            return scale
        return min(max(scale, low), high) if self.clip else self.default_scale

    def _apply(self, image: np.ndarray, boxes: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
        height, width, scaled = _resized_boxes(image.shape[:2], boxes, scale)
        big = (scaled[:, 2] >= MIN_BOX_SIDE) & (scaled[:, 3] >= MIN_BOX_SIDE)
        if len(boxes) and not big.any():
            height, width, scaled = _resized_boxes(image.shape[:2], boxes, self.default_scale)
            big = np.ones(len(boxes), bool)
        return resize_bilinear(image, height, width), scaled[big]


def _resized_boxes(shape: tuple[int, int], boxes: np.ndarray, scale: float) -> tuple[int, int, np.ndarray]:
    """The image size after scaling by `scale` (rounded) and the boxes scaled by the exact size ratios."""
    h, w = shape
    height, width = max(int(round(scale * h)), 1), max(int(round(scale * w)), 1)
    return height, width, boxes * np.array([width / w, height / h, width / w, height / h])


@dataclass(kw_only=True)
class ScaleMatch(_Rescale):
    """Resize each image so its mean object size is a sample of the `target` size distribution."""

    target: SizeDistribution
    max_tries: int = 5

    def scale_for(self, boxes: np.ndarray, rng: np.random.Generator) -> float:
        """The scale for an image with these boxes: resample up to `max_tries` times for one in range."""
        src = _geometric_mean_size(as_boxes(boxes))
        if src is None:
            return self.default_scale
        for _ in range(self.max_tries):
            scale = sample_size(self.target, rng) / src
            if self.scale_range[0] < scale < self.scale_range[1]:
                return scale
        return self._bounded(scale)

    def __call__(self, image: np.ndarray, boxes: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """The rescaled image and its boxes."""
        boxes = as_boxes(boxes)
        return self._apply(image, boxes, self.scale_for(boxes, rng))


@dataclass(kw_only=True)
class MonotoneScaleMatch(_Rescale):
    """Resize each image so the quantile of its mean object size among `source_sizes` (the
    training set's object sizes) lands on the same quantile of the `target` distribution."""

    source_sizes: np.ndarray
    target: SizeDistribution

    def __post_init__(self) -> None:
        sizes = np.sort(np.asarray(self.source_sizes, np.float64).reshape(-1))
        sizes = sizes[sizes > 0]
        if len(sizes) == 0:
            raise ValueError("MonotoneScaleMatch needs at least one positive source size")
        n = len(sizes)
        cumulative = np.cumsum(self.target.mass)
        edges = [sizes[0]] + [sizes[min(int(p * n), n - 1)] for p in cumulative]
        edges[-1] = max(edges[-1], sizes[-1])
        self._source_edges = np.array(edges)

    def match_size(self, size: float) -> float:
        """The target size at the quantile of `size` among the source sizes (linear inside a bin)."""
        src, dst = self._source_edges, self.target.edges
        index = int(np.flatnonzero(size <= src[1:] + 1e-6)[0]) if size <= src[-1] + 1e-6 else len(src) - 2
        width = src[index + 1] - src[index]
        fraction = (size - src[index]) / width if width > 0 else 0.0
        return float(dst[index] + fraction * (dst[index + 1] - dst[index]))

    def scale_for(self, boxes: np.ndarray) -> float:
        """The scale for an image with these boxes (deterministic)."""
        src = _geometric_mean_size(as_boxes(boxes))
        return self.default_scale if src is None else self._bounded(self.match_size(src) / src)

    def __call__(self, image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The rescaled image and its boxes."""
        boxes = as_boxes(boxes)
        return self._apply(image, boxes, self.scale_for(boxes))
