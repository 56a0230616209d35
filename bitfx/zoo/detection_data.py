"""Tiny-object detection data: bundled digits pasted at 4–20 px onto crops of bundled photographs.

The placement is synthetic. Each image is a grayscale crop of one of the photographs bundled
with scikit-image (train and test use different photographs), and scikit-learn's bundled 8×8
digits (the fixed train/test split of `bitfx.zoo.data.digit_images`) are resized to a square of
side s ∈ [min_size, max_size] px and alpha-blended onto it in the ink (black or white) that
contrasts with the patch underneath. Nothing is downloaded.

Ground truth is exact: a box is the pasted square, (x, y, w, h) = (left, top, s, s) in pixels,
so √area = s and every object falls in the TinyPerson "tiny" band [1, 20]. Objects do not touch
each other. As in TinyPerson, some regions are not scored:

- `ignore` — a crowd: a cluster of 3–5 overlapping digits of 4–6 px, annotated by one box
  around the whole cluster (about one image in four);
- `uncertain` — a faint digit (its alpha scaled by 0.3; about one object in ten).

Every image and box is a deterministic function of (split, seed, index).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from bitfx.zoo.data import SPLITS, digit_images
from bitfx.zoo.sr_data import bundled_image_dir

PHOTOGRAPHS = {
    "train": ("astronaut.png", "coffee.png", "camera.png", "grass.png", "gravel.png", "brick.png", "moon.png"),
    "test": ("chelsea.png", "rocket.jpg", "motorcycle_left.png"),
}
FAINT_ALPHA = 0.3
CROWD_PROBABILITY = 0.25
UNCERTAIN_PROBABILITY = 0.1


@dataclass(frozen=True)
class PastedObjects:
    """The ground truth of one image: boxes (n × 4, x y w h in pixels) and per-box flags."""

    boxes: np.ndarray
    ignore: np.ndarray
    uncertain: np.ndarray


def tiny_objects(
    input_shape: tuple[int, int, int, int] = (1, 1, 64, 64),
    *,
    split: str = "train",
    count: int = 256,
    batch_size: int = 32,
    seed: int = 0,
    min_size: int = 4,
    max_size: int = 20,
    max_objects: int = 6,
) -> list[tuple[Tensor, list[PastedObjects]]]:
    """`count` synthetic images of input_shape's C × H × W (pixels in [0, 1], gray replicated to C),
    in batches of (images, ground truth per image); input_shape's N is ignored for `batch_size`."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not 1 <= min_size <= max_size:
        raise ValueError(f"object sizes must satisfy 1 <= min_size <= max_size, got {min_size}, {max_size}")
    _, channels, height, width = input_shape
    photos = [_gray_photograph(name) for name in PHOTOGRAPHS[split]]
    glyphs = digit_images(split)[0]
    rng = np.random.default_rng((seed, SPLITS.index(split)))
    images, truths = [], []
    for _ in range(count):
        image, truth = _paste_image(rng, photos, glyphs, height, width, (min_size, max_size), max_objects)
        images.append(image)
        truths.append(truth)
    stacked = torch.from_numpy(np.stack(images)).float().unsqueeze(1).repeat(1, channels, 1, 1)
    return [
        (stacked[start : start + batch_size], truths[start : start + batch_size])
        for start in range(0, count, batch_size)
    ]


def _gray_photograph(name: str) -> np.ndarray:
    """One bundled photograph as a float gray image in [0, 1]."""
    import skimage.color
    import skimage.io

    image = np.asarray(skimage.io.imread(bundled_image_dir() / name), dtype=np.float64)
    if image.ndim == 3:
        image = skimage.color.rgb2gray(image[..., :3] / 255.0)
    else:
        image = image / 255.0
    return image


def _paste_image(
    rng: np.random.Generator,
    photos: list[np.ndarray],
    glyphs: np.ndarray,
    height: int,
    width: int,
    sizes: tuple[int, int],
    max_objects: int,
) -> tuple[np.ndarray, PastedObjects]:
    """One crop with its pasted digits and their boxes."""
    photo = photos[rng.integers(len(photos))]
    top, left = rng.integers(photo.shape[0] - height + 1), rng.integers(photo.shape[1] - width + 1)
    image = photo[top : top + height, left : left + width].copy()
    boxes, flags = [], []  # flags: (ignore, uncertain) per box
    if rng.random() < CROWD_PROBABILITY:
        crowd = _paste_crowd(rng, image, glyphs)
        if crowd is not None:
            boxes.append(crowd)
            flags.append((True, False))
    for _ in range(rng.integers(1, max_objects + 1)):
        side = int(rng.integers(sizes[0], sizes[1] + 1))
        spot = _free_spot(rng, image.shape, side, side, boxes)
        if spot is None:
            continue
        faint = bool(rng.random() < UNCERTAIN_PROBABILITY)
        _blend(image, glyphs[rng.integers(len(glyphs))], spot, side, FAINT_ALPHA if faint else 1.0)
        boxes.append((spot[1], spot[0], side, side))
        flags.append((False, faint))
    flag_array = np.array(flags, bool).reshape(-1, 2)
    truth = PastedObjects(np.array(boxes, np.float64).reshape(-1, 4), flag_array[:, 0], flag_array[:, 1])
    return image.astype(np.float32), truth


def _paste_crowd(rng: np.random.Generator, image: np.ndarray, glyphs: np.ndarray) -> tuple | None:
    """3–5 overlapping 4–6 px digits in one place; their enclosing box, or None when there is no room."""
    extent = 14
    spot = _free_spot(rng, image.shape, extent, extent, [])
    if spot is None:
        return None
    lo_y, lo_x, hi_y, hi_x = image.shape[0], image.shape[1], 0, 0
    for _ in range(rng.integers(3, 6)):
        side = int(rng.integers(4, 7))
        y = spot[0] + int(rng.integers(extent - side + 1))
        x = spot[1] + int(rng.integers(extent - side + 1))
        _blend(image, glyphs[rng.integers(len(glyphs))], (y, x), side, 1.0)
        lo_y, lo_x, hi_y, hi_x = min(lo_y, y), min(lo_x, x), max(hi_y, y + side), max(hi_x, x + side)
    return (lo_x, lo_y, hi_x - lo_x, hi_y - lo_y)


def _free_spot(
    rng: np.random.Generator, shape: tuple[int, ...], h: int, w: int, boxes: list[tuple], tries: int = 30
) -> tuple[int, int] | None:
    """A random top-left (y, x) whose h × w box, grown by 2 px, misses every box so far; None if none found."""
    for _ in range(tries):
        y, x = int(rng.integers(shape[0] - h + 1)), int(rng.integers(shape[1] - w + 1))
        if all(x + w + 2 <= bx or bx + bw + 2 <= x or y + h + 2 <= by or by + bh + 2 <= y for bx, by, bw, bh in boxes):
            return y, x
    return None


def _blend(image: np.ndarray, glyph: np.ndarray, spot: tuple[int, int], side: int, strength: float) -> None:
    """Alpha-blend `glyph` (8×8 in [0, 1]) resized to side × side at `spot`, in the ink that contrasts."""
    alpha = F.interpolate(torch.from_numpy(glyph)[None, None].float(), size=(side, side), mode="bilinear")
    alpha = alpha[0, 0].clamp(0, 1).numpy() * strength
    y, x = spot
    patch = image[y : y + side, x : x + side]
    ink = 0.0 if patch.mean() > 0.5 else 1.0
    image[y : y + side, x : x + side] = patch * (1 - alpha) + ink * alpha
