"""`torch.library` ops of the binary layers: the torch side of the `bitfx` ONNX domain.

`bitfx::binary_conv2d` and `bitfx::binary_gemm` compute exactly what `bitfx.BinaryConv2d` and
`bitfx.BinaryGemm` compute (docs/binary-format.md), with the same inputs and attributes, except
that W is given unpacked, as ±1 floats (ONNX stores it bit-packed). Each has a
fake kernel, so `torch.export` and `torch.onnx.export(dynamo=True)` keep it as one node, which
the ONNX lowerings translate (`bitfx.backends.onnx`). They have no autograd: training goes
through the layers' differentiable path (`bitfx.ir.binary.layers`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from bitfx.ir.binary.sign import binary_sign

PAD_VALUES = (-1, 0, 1)


def _check_conv(
    x: Tensor,
    weight: Tensor,
    scale: Tensor,
    bias: Tensor,
    kernel_shape: list[int],
    pads: list[int],
    group: int,
    in_channels: int,
    pad_value: int,
) -> None:
    out_channels = weight.shape[0]
    if x.dim() != 4 or x.shape[1] != in_channels:
        raise ValueError(f"bitfx::binary_conv2d expects input N×{in_channels}×H×W, got {tuple(x.shape)}")
    if tuple(weight.shape) != (out_channels, in_channels // group, *kernel_shape):
        raise ValueError(
            f"bitfx::binary_conv2d weight shape {tuple(weight.shape)} does not match "
            f"in_channels={in_channels}, group={group}, kernel_shape={kernel_shape}"
        )
    if tuple(scale.shape) != (out_channels,) or tuple(bias.shape) != (out_channels,):
        raise ValueError(
            f"bitfx::binary_conv2d scale and bias must have shape ({out_channels},), "
            f"got {tuple(scale.shape)} and {tuple(bias.shape)}"
        )
    if len(pads) != 4 or pad_value not in PAD_VALUES:
        raise ValueError(
            f"bitfx::binary_conv2d needs pads=[top, left, bottom, right] and pad_value in {PAD_VALUES}, "
            f"got pads={pads}, pad_value={pad_value}"
        )


def _check_signs(weight: Tensor, op: str) -> None:
    if not bool((weight.abs() == 1).all()):
        raise ValueError(f"bitfx::{op} takes the weight as ±1 values (sign(W)); binarize it first")


def conv_output_size(size: int, kernel: int, stride: int, pad_before: int, pad_after: int, dilation: int) -> int:
    """Output length of a convolution along one axis, as PyTorch and ONNX compute it."""
    return (size + pad_before + pad_after - dilation * (kernel - 1) - 1) // stride + 1


@torch.library.custom_op("bitfx::binary_conv2d", mutates_args=())
def binary_conv2d(
    x: Tensor,
    weight: Tensor,
    scale: Tensor,
    bias: Tensor,
    kernel_shape: list[int],
    strides: list[int],
    pads: list[int],
    dilations: list[int],
    group: int,
    in_channels: int,
    pad_value: int,
    binarize_input: int,
) -> Tensor:
    """Y[n, c] = scale[c] · conv(A, W)[n, c] + bias[c] for ±1 weights W, A = sign(X) (or X when
    `binarize_input` is 0), padded by `pads` = [top, left, bottom, right] with `pad_value`."""
    _check_conv(x, weight, scale, bias, kernel_shape, pads, group, in_channels, pad_value)
    _check_signs(weight, "binary_conv2d")
    activations = binary_sign(x) if binarize_input else x
    top, left, bottom, right = pads
    if any(pads):
        activations = F.pad(activations, (left, right, top, bottom), value=float(pad_value))
    y = F.conv2d(activations, weight, None, strides, 0, dilations, group)
    return y * scale.view(1, -1, 1, 1) + bias.view(1, -1, 1, 1)


@binary_conv2d.register_fake
def _binary_conv2d_fake(
    x, weight, scale, bias, kernel_shape, strides, pads, dilations, group, in_channels, pad_value, binarize_input
):
    _check_conv(x, weight, scale, bias, kernel_shape, pads, group, in_channels, pad_value)
    height = conv_output_size(x.shape[2], kernel_shape[0], strides[0], pads[0], pads[2], dilations[0])
    width = conv_output_size(x.shape[3], kernel_shape[1], strides[1], pads[1], pads[3], dilations[1])
    return x.new_empty((x.shape[0], weight.shape[0], height, width))


def _check_gemm(x: Tensor, weight: Tensor, scale: Tensor, bias: Tensor, in_features: int) -> None:
    out_features = weight.shape[0]
    if x.dim() != 2 or x.shape[1] != in_features or tuple(weight.shape) != (out_features, in_features):
        raise ValueError(
            f"bitfx::binary_gemm expects input N×{in_features} and weight C_out×{in_features}, "
            f"got {tuple(x.shape)} and {tuple(weight.shape)}"
        )
    if tuple(scale.shape) != (out_features,) or tuple(bias.shape) != (out_features,):
        raise ValueError(
            f"bitfx::binary_gemm scale and bias must have shape ({out_features},), "
            f"got {tuple(scale.shape)} and {tuple(bias.shape)}"
        )


@torch.library.custom_op("bitfx::binary_gemm", mutates_args=())
def binary_gemm(
    x: Tensor, weight: Tensor, scale: Tensor, bias: Tensor, in_features: int, binarize_input: int
) -> Tensor:
    """Y[n, c] = scale[c] · Σ_k A[n, k] · W[c, k] + bias[c] for ±1 weights W, A = sign(X) (or X)."""
    _check_gemm(x, weight, scale, bias, in_features)
    _check_signs(weight, "binary_gemm")
    activations = binary_sign(x) if binarize_input else x
    return (activations @ weight.t()) * scale + bias


@binary_gemm.register_fake
def _binary_gemm_fake(x, weight, scale, bias, in_features, binarize_input):
    _check_gemm(x, weight, scale, bias, in_features)
    return x.new_empty((x.shape[0], weight.shape[0]))
