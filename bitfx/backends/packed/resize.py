"""ONNX Resize in numpy: nearest and (bi)linear interpolation, axis by axis, with the coordinate
transforms torch.onnx writes for `F.interpolate` / `nn.Upsample` (asymmetric, half_pixel,
pytorch_half_pixel, align_corners). Both modes are separable, so an N-D resize is one 1-D
resize per axis whose size changes."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

MODES = ("nearest", "linear")
TRANSFORMS = ("asymmetric", "half_pixel", "pytorch_half_pixel", "align_corners")
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


def output_shape(
    shape: Sequence[int], axes: Sequence[int], scales: Sequence[float] | None, sizes: Sequence[int] | None
) -> tuple[list[int], list[float]]:
    """(output size, scale) of every axis of an input of `shape`; `scales` or `sizes` give those of `axes`."""
    out, factors = list(shape), [1.0] * len(shape)
    for i, axis in enumerate(axes):
        if sizes is not None:
            out[axis] = int(sizes[i])
            factors[axis] = out[axis] / shape[axis] if shape[axis] else 1.0
        else:
            factors[axis] = float(scales[i])
            out[axis] = int(math.floor(shape[axis] * factors[axis]))
    return out, factors


def source_coordinates(size_in: int, size_out: int, scale: float, transform: str) -> np.ndarray:
    """The input coordinate (float) each output index maps to."""
    x = np.arange(size_out, dtype=np.float64)
    if transform == "asymmetric":
        return x / scale
    if transform == "half_pixel":
        return (x + 0.5) / scale - 0.5
    if transform == "pytorch_half_pixel":
        return (x + 0.5) / scale - 0.5 if size_out > 1 else np.zeros(size_out)
    return x * (size_in - 1) / (size_out - 1) if size_out > 1 else np.zeros(size_out)  # align_corners


def _nearest_index(coordinates: np.ndarray, size_in: int, nearest_mode: str) -> np.ndarray:
    if nearest_mode == "floor":
        index = np.floor(coordinates)
    elif nearest_mode == "ceil":
        index = np.ceil(coordinates)
    else:
        half = coordinates - np.floor(coordinates) == 0.5
        tie = np.floor(coordinates) if nearest_mode == "round_prefer_floor" else np.ceil(coordinates)
        index = np.where(half, tie, np.floor(coordinates + 0.5))
    return np.clip(index, 0, size_in - 1).astype(np.int64)


def resize_axis(x: np.ndarray, axis: int, size_out: int, scale: float, mode: str, transform: str, nearest_mode: str):
    """`x` resized along `axis` to `size_out` elements."""
    size_in = x.shape[axis]
    coordinates = source_coordinates(size_in, size_out, scale, transform)
    if mode == "nearest":
        return np.take(x, _nearest_index(coordinates, size_in, nearest_mode), axis=axis)
    coordinates = np.clip(coordinates, 0, size_in - 1)
    low = np.floor(coordinates).astype(np.int64)
    high = np.minimum(low + 1, size_in - 1)
    weight_shape = [1] * x.ndim
    weight_shape[axis] = size_out
    weight = (coordinates - low).astype(x.dtype).reshape(weight_shape)
    below, above = np.take(x, low, axis=axis), np.take(x, high, axis=axis)
    return below + (above - below) * weight


def resize(
    x: np.ndarray, out_shape: Sequence[int], factors: Sequence[float], mode: str, transform: str, nearest_mode: str
) -> np.ndarray:
    """`x` resized to `out_shape` (one 1-D resize per axis whose size or scale differs)."""
    for axis, (size, scale) in enumerate(zip(out_shape, factors)):
        if size != x.shape[axis] or scale != 1.0:
            x = resize_axis(x, axis, size, scale, mode, transform, nearest_mode)
    return np.ascontiguousarray(x)
