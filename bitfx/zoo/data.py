"""Small datasets for calibrating, fine-tuning and checking compressed models.

Data protocol: a data function takes ``input_shape`` (a tuple N, C, H, W) and returns an
iterable of batches, each either a tensor of inputs or an ``(inputs, labels)`` tuple.
The first batch serves as the example inputs (for tracing and export).
"""

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

SPLITS = ("train", "test")


def _check_shape(input_shape: tuple[int, ...]) -> None:
    if len(input_shape) != 4:
        raise ValueError(f"input_shape must be (N, C, H, W), got {tuple(input_shape)}")


def digit_images(split: str) -> tuple[np.ndarray, np.ndarray]:
    """The fixed 80/20 stratified split of scikit-learn's digits: 8×8 images in [0, 1] and their labels."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as err:
        raise ImportError(
            "bitfx.zoo.digits needs scikit-learn: pip install 'bitfx[examples]' (or pip install scikit-learn)"
        ) from err

    dataset = load_digits()
    train_x, test_x, train_y, test_y = train_test_split(
        dataset.images, dataset.target, test_size=0.2, random_state=0, stratify=dataset.target
    )
    images, labels = (train_x, train_y) if split == "train" else (test_x, test_y)
    return images / 16.0, labels


def digits(
    input_shape: tuple[int, int, int, int] = (1, 3, 32, 32),
    *,
    split: str = "train",
    batch_size: int = 64,
    seed: int = 0,
) -> list[tuple[Tensor, Tensor]]:
    """scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes), no download.

    The 80/20 train/test split is fixed (stratified, same for every ``seed``); ``seed``
    only shuffles the order of the chosen split. Pixels are scaled to [-1, 1], resized
    bilinearly to input_shape's H x W and replicated to its C channels; input_shape's
    batch dimension is ignored in favour of ``batch_size``. Returns (images float32,
    labels int64) batches; the last one may be smaller.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    _check_shape(input_shape)
    images, labels = digit_images(split)
    images = torch.as_tensor(images, dtype=torch.float32).unsqueeze(1)
    images = (images - 0.5) / 0.5
    labels = torch.as_tensor(labels, dtype=torch.int64)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))

    _, channels, height, width = input_shape
    batches = []
    for indices in order.split(batch_size):
        batch = F.interpolate(images[indices], size=(height, width), mode="bilinear", align_corners=False)
        batches.append((batch.repeat(1, channels, 1, 1), labels[indices]))
    return batches


def random(
    input_shape: tuple[int, int, int, int] = (1, 3, 32, 32),
    *,
    batches: int = 2,
    batch_size: int | None = None,
    seed: int = 0,
) -> list[Tensor]:
    """Seeded standard-normal batches of input_shape; ``batch_size``, when given, replaces its N."""
    _check_shape(input_shape)
    shape = (input_shape[0] if batch_size is None else batch_size, *input_shape[1:])
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=generator) for _ in range(batches)]
