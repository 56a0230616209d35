"""Super-resolution data from the photographs bundled inside the scikit-image wheel.

scikit-image ships a few sample images in `skimage/data/` and fetches the rest on demand
with pooch; only the bundled files are read here (straight from that directory, so nothing
is ever downloaded). Low-resolution images are bicubic downsamplings (with antialiasing)
of the high-resolution ones, as in the EDSR/DIV2K "bicubic" track. PSNR is measured on the
luma channel (ITU-R BT.601) with `scale` pixels shaved at each border, as EDSR reports it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

TRAIN_IMAGES = ("astronaut.png", "coffee.png", "hubble_deep_field.jpg", "ihc.png", "motorcycle_left.png", "retina.jpg")
TEST_IMAGES = ("chelsea.png", "rocket.jpg")


@dataclass(frozen=True)
class SRPair:
    """A high-resolution image and its bicubic downsampling (3 × H × W in [0, 1])."""

    name: str
    hr: Tensor
    lr: Tensor


def bundled_image_dir() -> Path:
    """The directory of the sample images inside the installed scikit-image package."""
    try:
        import skimage.data
    except ImportError as error:
        raise ImportError("bitfx.zoo.sr_data needs scikit-image: pip install 'bitfx[examples]'") from error
    return Path(skimage.data.__file__).parent


def load_pairs(names: tuple[str, ...], scale: int) -> list[SRPair]:
    """The named bundled RGB photographs, cropped to a multiple of `scale`, with their LR versions."""
    import skimage.io

    folder = bundled_image_dir()
    pairs = []
    for name in names:
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(
                f"{name} is not bundled in {folder}; use one of {sorted(p.name for p in folder.glob('*.png'))}"
            )
        image = np.asarray(skimage.io.imread(path))[..., :3]
        hr = torch.from_numpy(image.copy()).permute(2, 0, 1).float() / 255
        height, width = (hr.shape[1] // scale) * scale, (hr.shape[2] // scale) * scale
        hr = hr[:, :height, :width].contiguous()
        pairs.append(SRPair(name, hr, downsample(hr, scale)))
    return pairs


def downsample(hr: Tensor, scale: int) -> Tensor:
    """Bicubic downsampling by `scale` with antialiasing, clipped to [0, 1] (3 × H × W or N × 3 × H × W)."""
    batch = hr if hr.dim() == 4 else hr.unsqueeze(0)
    lr = F.interpolate(batch, scale_factor=1 / scale, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    return lr if hr.dim() == 4 else lr[0]


def random_patches(
    pairs: list[SRPair], count: int, lr_size: int, scale: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """`count` aligned (LR, HR) patch pairs from random images and positions, randomly flipped
    and rotated by multiples of 90°: (count × 3 × lr_size²,  count × 3 × (lr_size·scale)²)."""
    lows, highs = [], []
    for _ in range(count):
        pair = pairs[int(torch.randint(len(pairs), (1,), generator=generator))]
        top = int(torch.randint(pair.lr.shape[1] - lr_size + 1, (1,), generator=generator))
        left = int(torch.randint(pair.lr.shape[2] - lr_size + 1, (1,), generator=generator))
        low = pair.lr[:, top : top + lr_size, left : left + lr_size]
        high = pair.hr[:, top * scale : (top + lr_size) * scale, left * scale : (left + lr_size) * scale]
        turns, flip = (
            int(torch.randint(4, (1,), generator=generator)),
            bool(torch.randint(2, (1,), generator=generator)),
        )
        low, high = (torch.rot90(t, turns, dims=(1, 2)) for t in (low, high))
        if flip:
            low, high = low.flip(2), high.flip(2)
        lows.append(low)
        highs.append(high)
    return torch.stack(lows), torch.stack(highs)


def luma(image: Tensor) -> Tensor:
    """ITU-R BT.601 luma (16–235 range, scaled to [0, 1]) of RGB in [0, 1]; the channel axis is −3."""
    weights = torch.tensor([65.481, 128.553, 24.966], dtype=image.dtype).reshape(3, 1, 1) / 255
    return (image * weights).sum(dim=-3) + 16 / 255


def psnr_y(sr: Tensor, hr: Tensor, shave: int) -> float:
    """PSNR in dB on luma, `shave` border pixels removed, after quantizing SR to 8-bit levels."""
    sr = (sr.clamp(0, 1) * 255).round() / 255
    difference = luma(sr) - luma(hr)
    if shave:
        difference = difference[..., shave:-shave, shave:-shave]
    mse = float(difference.pow(2).mean())
    return 10 * math.log10(1 / mse) if mse > 0 else math.inf
