"""The torch ops the `integer` lowering puts in a graph before export, and their ONNX translations.

Each op computes in torch exactly what its ONNX translation computes, on the same integer codes.
A ±1 activation is stored as a uint8 code: ZERO_POINT − 1 for −1, ZERO_POINT + 1 for +1.

- `bitfx_int::sign_codes(x)` → codes of sign(x) (sign(0) = +1): `Where(x < 0, 1, 3)`;
- `bitfx_int::conv_float(codes, w_codes, scale, bias, …, layer)` → float32 scale·k + bias, k the
  exact ±1 convolution: `ConvInteger(codes, w_codes, 2, 1)` (uint8 × uint8, weight codes 0/2 with
  zero point 1) → `DequantizeLinear(k, scale, axis=1)` → `Add(bias)`;
- `bitfx_int::conv_sign(codes, weight, bias, w_scale, w_zero, …, layer)` → the codes of the next
  layer's sign: +1 where k + bias_c ≥ 0, bias_c = −t_c. ONNX: `QLinearConv` (uint8 activations
  with zero point 2, int8 ±1 weights with per-channel scale 1 and zero point 0, int32 bias, output scale 1/256 and
  zero point 255) → `Clip(1, 3)`. Its requantization is clamp(round(256·(k − t_c)) + 255, 0, 255):
  255 for k ≥ t_c and 0 for k ≤ t_c − 1 (k − t_c is an integer, 256 a power of two, so nothing
  rounds); the Clip maps 0 ↦ 1 and 255 ↦ 3;
- `bitfx_int::conv_matmul(codes, indices, w_matrix, scale, bias, pads, pad_value, in_channels, layer)`
  → the same float32 scale·k + bias as `conv_float` for a group-1 conv, computed channels-last as
  one matrix product, which onnxruntime runs on its uint8 × int8 GEMM: `Transpose` to NHWC →
  [`Pad`] → `Reshape` to rows of C_in codes → one `Gather` of the rows every output position reads
  (`im2col_indices`, which hold the kernel size, strides and dilations) → `Reshape` (the im2col
  matrix, columns (tap, channel)) → `MatMulInteger` (zero point 2; int8 ±1 weights `w_matrix`
  [kh·kw·C_in, C_out], zero point 0; int32 k, exact) → `Cast` → `Mul(scale)` → `Add(bias)` →
  `Transpose` back to NCHW. One Gather costs less than one Slice per tap and a Concat;
- `bitfx_int::gemm_float(codes, w_codes, scale, bias, layer)` → `MatMulInteger` likewise.

Padding: QLinearConv and ConvInteger pad with the zero point, i.e. with a real 0 as PyTorch
does; "one padding" is an explicit `Pad` with the code of ±1. No code is 0, because the
exporter's optimizer folds a `Pad` with value 0 into ConvInteger's pads (which then pad with
the zero point). `layer` (the binary layer's module name) is written as node metadata
(`bitfx.binary_layer`) on the integer node, so that verification can find each layer's codes.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import torch
import torch.nn.functional as F
from onnxscript import opset18 as op
from torch import Tensor

from bitfx.ir.binary.ops import conv_output_size

ZERO_POINT = 2
OUTPUT_SCALE = 1.0 / 256
LAYER_KEY = "bitfx.binary_layer"


def _signs(codes: Tensor) -> Tensor:
    return codes.to(torch.float32) - ZERO_POINT


def _padded(a: Tensor, pads: list[int], pad_value: int) -> Tensor:
    top, left, bottom, right = pads
    return F.pad(a, (left, right, top, bottom), value=float(pad_value)) if any(pads) else a


def conv_sum(
    codes: Tensor, weight: Tensor, strides: list[int], pads: list[int], dilations: list[int], group: int, pad_value: int
) -> Tensor:
    """k: the exact ±1 convolution of the activations stored as `codes` with ±1 `weight`."""
    return F.conv2d(
        _padded(_signs(codes), pads, pad_value), weight.to(torch.float32), None, strides, 0, dilations, group
    )


@torch.library.custom_op("bitfx_int::sign_codes", mutates_args=())
def sign_codes(x: Tensor) -> Tensor:
    return torch.where(x < 0, ZERO_POINT - 1, ZERO_POINT + 1).to(torch.uint8)


@sign_codes.register_fake
def _(x: Tensor) -> Tensor:
    return torch.empty_like(x, dtype=torch.uint8)


def _conv_shape(
    codes: Tensor, weight: Tensor, kernel_shape: list[int], strides: list[int], pads: list[int], dilations: list[int]
) -> list[int]:
    height = conv_output_size(codes.shape[2], kernel_shape[0], strides[0], pads[0], pads[2], dilations[0])
    width = conv_output_size(codes.shape[3], kernel_shape[1], strides[1], pads[1], pads[3], dilations[1])
    return [codes.shape[0], weight.shape[0], height, width]


@torch.library.custom_op("bitfx_int::conv_float", mutates_args=())
def conv_float(
    codes: Tensor, w_codes: Tensor, scale: Tensor, bias: Tensor, kernel_shape: list[int], strides: list[int],
    pads: list[int], dilations: list[int], group: int, pad_value: int, layer: str,
) -> Tensor:  # fmt: skip
    k = conv_sum(codes, _signs(w_codes) + 1, strides, pads, dilations, group, pad_value)
    return k * scale.view(1, -1, 1, 1) + bias.view(1, -1, 1, 1)


@conv_float.register_fake
def _(codes, w_codes, scale, bias, kernel_shape, strides, pads, dilations, group, pad_value, layer):
    return codes.new_empty(_conv_shape(codes, w_codes, kernel_shape, strides, pads, dilations), dtype=torch.float32)


def conv_matrix(weight: Tensor) -> Tensor:
    """`conv_matmul`'s int8 weight matrix [kh·kw·C_in, C_out] of a ±1 conv weight [C_out, C_in, kh, kw]
    (rows in the order of the im2col columns: kernel tap, then channel)."""
    return weight.permute(2, 3, 1, 0).reshape(-1, weight.shape[0]).to(torch.int8)


def im2col_indices(
    height: int, width: int, kernel_shape: list[int], strides: list[int], pads: list[int], dilations: list[int]
) -> Tensor:
    """int32 [H_out, W_out, kh·kw]: for every output position and kernel tap, the row of the padded
    channels-last input flattened to [(H + top + bottom)·(W + left + right), C] that the tap reads."""
    padded_width = width + pads[1] + pads[3]
    out_h = conv_output_size(height, kernel_shape[0], strides[0], pads[0], pads[2], dilations[0])
    out_w = conv_output_size(width, kernel_shape[1], strides[1], pads[1], pads[3], dilations[1])
    rows = (
        torch.arange(out_h).view(-1, 1, 1, 1) * strides[0]
        + torch.arange(kernel_shape[0]).view(1, 1, -1, 1) * dilations[0]
    )
    cols = (
        torch.arange(out_w).view(1, -1, 1, 1) * strides[1]
        + torch.arange(kernel_shape[1]).view(1, 1, 1, -1) * dilations[1]
    )
    return (rows * padded_width + cols).reshape(out_h, out_w, -1).to(torch.int32)


@torch.library.custom_op("bitfx_int::conv_matmul", mutates_args=())
def conv_matmul(
    codes: Tensor, indices: Tensor, w_matrix: Tensor, scale: Tensor, bias: Tensor, pads: list[int], pad_value: int,
    in_channels: int, layer: str,
) -> Tensor:  # fmt: skip
    top, left, bottom, right = pads
    padded = F.pad(codes.permute(0, 2, 3, 1), (0, 0, left, right, top, bottom), value=ZERO_POINT + pad_value)
    rows = padded.reshape(codes.shape[0], -1, in_channels).index_select(1, indices.flatten().to(torch.int64))
    columns = rows.reshape(codes.shape[0], *indices.shape[:2], -1)
    k = _signs(columns) @ w_matrix.to(torch.float32)
    return (k * scale + bias).permute(0, 3, 1, 2).contiguous()


@conv_matmul.register_fake
def _(codes, indices, w_matrix, scale, bias, pads, pad_value, in_channels, layer):
    return codes.new_empty((codes.shape[0], w_matrix.shape[1], *indices.shape[:2]), dtype=torch.float32)


@torch.library.custom_op("bitfx_int::conv_sign", mutates_args=())
def conv_sign(
    codes: Tensor, weight: Tensor, bias: Tensor, w_scale: Tensor, w_zero: Tensor, kernel_shape: list[int],
    strides: list[int], pads: list[int], dilations: list[int], group: int, pad_value: int, layer: str,
) -> Tensor:  # fmt: skip
    k = conv_sum(codes, weight, strides, pads, dilations, group, pad_value)
    return torch.where(k + bias.view(1, -1, 1, 1).to(torch.float32) >= 0, ZERO_POINT + 1, ZERO_POINT - 1).to(
        torch.uint8
    )


@conv_sign.register_fake
def _(codes, weight, bias, w_scale, w_zero, kernel_shape, strides, pads, dilations, group, pad_value, layer):
    return codes.new_empty(_conv_shape(codes, weight, kernel_shape, strides, pads, dilations), dtype=torch.uint8)


@torch.library.custom_op("bitfx_int::gemm_float", mutates_args=())
def gemm_float(codes: Tensor, w_codes: Tensor, scale: Tensor, bias: Tensor, layer: str) -> Tensor:
    k = _signs(codes) @ (_signs(w_codes) + 1).t()
    return k * scale + bias


@gemm_float.register_fake
def _(codes, w_codes, scale, bias, layer):
    return codes.new_empty((codes.shape[0], w_codes.shape[0]), dtype=torch.float32)


def _scalar(value: float | int, dtype: type) -> object:
    return op.Constant(value=ir.tensor(np.array(value, dtype=dtype)))


def _tag(value: object, layer: str) -> None:
    value.producer().metadata_props[LAYER_KEY] = layer


def _pad_codes(codes, pads: list[int], pad_value: int) -> tuple[object, list[int]]:
    """Codes padded explicitly with the code of ±1 for one padding; zero padding stays in the conv."""
    if pad_value == 0 or not any(pads):
        return codes, list(pads)
    top, left, bottom, right = pads
    widths = op.Constant(value_ints=[0, 0, top, left, 0, 0, bottom, right])
    return op.Pad(codes, widths, _scalar(ZERO_POINT + pad_value, np.uint8)), [0, 0, 0, 0]


def _translate_sign_codes(x):
    return op.Where(
        op.Less(x, op.CastLike(0.0, x)), _scalar(ZERO_POINT - 1, np.uint8), _scalar(ZERO_POINT + 1, np.uint8)
    )


def _translate_conv_float(codes, w_codes, scale, bias, kernel_shape, strides, pads, dilations, group, pad_value, layer):
    codes, conv_pads = _pad_codes(codes, pads, pad_value)
    k = op.ConvInteger(
        codes, w_codes, _scalar(ZERO_POINT, np.uint8), _scalar(1, np.uint8),
        kernel_shape=kernel_shape, strides=strides, pads=conv_pads, dilations=dilations, group=group,
    )  # fmt: skip
    _tag(k, layer)
    return op.Add(op.DequantizeLinear(k, scale, axis=1), op.Unsqueeze(bias, op.Constant(value_ints=[1, 2])))


def _translate_conv_matmul(codes, indices, w_matrix, scale, bias, pads, pad_value, in_channels, layer):
    nhwc = op.Transpose(codes, perm=[0, 2, 3, 1])
    if any(pads):
        top, left, bottom, right = pads
        widths = op.Constant(value_ints=[0, top, left, 0, 0, bottom, right, 0])
        nhwc = op.Pad(nhwc, widths, _scalar(ZERO_POINT + pad_value, np.uint8))
    rows = op.Gather(op.Reshape(nhwc, op.Constant(value_ints=[0, -1, in_channels])), indices, axis=1)
    columns = op.Reshape(rows, op.Constant(value_ints=[0, 0, 0, -1]))  # [N, H_out, W_out, kh·kw·C_in]
    k = op.MatMulInteger(columns, w_matrix, _scalar(ZERO_POINT, np.uint8), _scalar(0, np.int8))
    _tag(k, layer)
    y = op.Add(op.Mul(op.Cast(k, to=ir.DataType.FLOAT), scale), bias)
    return op.Transpose(y, perm=[0, 3, 1, 2])


def _translate_conv_sign(
    codes, weight, bias, w_scale, w_zero, kernel_shape, strides, pads, dilations, group, pad_value, layer
):
    codes, conv_pads = _pad_codes(codes, pads, pad_value)
    y = op.QLinearConv(
        codes, _scalar(1.0, np.float32), _scalar(ZERO_POINT, np.uint8), weight, w_scale, w_zero,
        _scalar(OUTPUT_SCALE, np.float32), _scalar(255, np.uint8), bias,
        kernel_shape=kernel_shape, strides=strides, pads=conv_pads, dilations=dilations, group=group,
    )  # fmt: skip
    _tag(y, layer)
    return op.Clip(y, _scalar(ZERO_POINT - 1, np.uint8), _scalar(ZERO_POINT + 1, np.uint8))


def _translate_gemm_float(codes, w_codes, scale, bias, layer):
    k = op.MatMulInteger(codes, op.Transpose(w_codes, perm=[1, 0]), _scalar(ZERO_POINT, np.uint8), _scalar(1, np.uint8))
    _tag(k, layer)
    return op.Add(op.DequantizeLinear(k, scale, axis=1), bias)


TRANSLATIONS = {
    torch.ops.bitfx_int.sign_codes.default: _translate_sign_codes,
    torch.ops.bitfx_int.conv_float.default: _translate_conv_float,
    torch.ops.bitfx_int.conv_matmul.default: _translate_conv_matmul,
    torch.ops.bitfx_int.conv_sign.default: _translate_conv_sign,
    torch.ops.bitfx_int.gemm_float.default: _translate_gemm_float,
}
