"""Plain numpy definitions of the `bitfx` ONNX domain ops (docs/binary-format.md), written for
clarity, not speed: the oracle the kernels are checked against by the tests and benchmarks. The
runtime itself never imports this module.

sign(x) = +1 for x ≥ 0 (and −0.0, NaN), −1 for x < 0; the packing is `bitfx.format`'s.
"""

from __future__ import annotations

import numpy as np

from bitfx.format import pack_signs, unpack_signs

__all__ = ["binary_conv2d", "binary_gemm", "conv_dots", "pack_conv_weights", "pack_signs", "sign", "unpack_signs"]


def sign(x: np.ndarray) -> np.ndarray:
    """±1 as float32, sign(0) = +1."""
    return np.where(np.asarray(x) < 0, -1.0, 1.0).astype(np.float32)


def pack_conv_weights(weight: np.ndarray) -> np.ndarray:
    """Float C_out × C_in/group × kh × kw → packed sign(W), C_out × kh × kw × ⌈(C_in/group)/64⌉ uint64."""
    return pack_signs(sign(weight).transpose(0, 2, 3, 1))


def conv_dots(
    x: np.ndarray,
    weights: np.ndarray,
    *,
    kernel_shape: tuple[int, int],
    strides: tuple[int, int] = (1, 1),
    pads: tuple[int, int, int, int] = (0, 0, 0, 0),
    dilations: tuple[int, int] = (1, 1),
    group: int = 1,
    in_channels: int,
    pad_value: int = 0,
    binarize_input: int = 1,
) -> np.ndarray:
    """conv(A, sign(W)) of `bitfx.BinaryConv2d` before scale and bias, in float64 (exact integers
    when the input is binarized)."""
    a = sign(x) if binarize_input else np.asarray(x, np.float32)
    a = a.astype(np.float64)
    per_group = in_channels // group
    w = unpack_signs(weights, per_group).transpose(0, 3, 1, 2).astype(np.float64)  # C_out × C_in/g × kh × kw
    top, left, bottom, right = pads
    a = np.pad(a, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=float(pad_value))
    (kh, kw), (sh, sw), (dh, dw) = kernel_shape, strides, dilations
    batch, _, height, width = a.shape
    out_h = (height - dh * (kh - 1) - 1) // sh + 1
    out_w = (width - dw * (kw - 1) - 1) // sw + 1
    out_channels = w.shape[0]
    per_out = out_channels // group
    out = np.zeros((batch, out_channels, out_h, out_w))
    for g in range(group):
        a_g = a[:, g * per_group : (g + 1) * per_group]
        w_g = w[g * per_out : (g + 1) * per_out]
        for i in range(kh):
            for j in range(kw):
                window = a_g[
                    :, :, i * dh : i * dh + sh * (out_h - 1) + 1 : sh, j * dw : j * dw + sw * (out_w - 1) + 1 : sw
                ]
                out[:, g * per_out : (g + 1) * per_out] += np.einsum("nchw,oc->nohw", window, w_g[:, :, i, j])
    return out


def binary_conv2d(
    x: np.ndarray, weights: np.ndarray, scale: np.ndarray, bias: np.ndarray, **attributes: object
) -> np.ndarray:
    """`bitfx.BinaryConv2d`: scale[c]·conv(A, sign(W))[n, c] + bias[c] in float32 (Mul, then Add)."""
    dots = conv_dots(x, weights, **attributes).astype(np.float32)
    return dots * np.asarray(scale, np.float32)[None, :, None, None] + np.asarray(bias, np.float32)[None, :, None, None]


def binary_gemm(
    x: np.ndarray,
    weights: np.ndarray,
    scale: np.ndarray,
    bias: np.ndarray,
    *,
    in_features: int,
    binarize_input: int = 1,
) -> np.ndarray:
    """`bitfx.BinaryGemm`: scale[c]·Σ_k A[n, k]·sign(W)[c, k] + bias[c] in float32."""
    a = sign(x) if binarize_input else np.asarray(x, np.float32)
    w = unpack_signs(weights, in_features)
    dots = (a.astype(np.float64) @ w.astype(np.float64).T).astype(np.float32)
    return dots * np.asarray(scale, np.float32) + np.asarray(bias, np.float32)
