"""The `int8` lowering: binary layers as ±1 integer convolutions that onnxruntime runs on its
integer kernels; standard ONNX only.

    bitfx::binary_conv2d → A = Where(X < 0, 1, 3) (uint8, zero point 2: the codes of −1 and +1)
                           → [Pad(pad_value)] → ConvInteger(A, W + 1 as uint8, zero point 1) → int32
                           → DequantizeLinear(·, scale, axis=1), i.e. float(k)·scale → Add(bias)
    bitfx::binary_gemm   → the same with MatMulInteger

Weights are uint8 too (codes 0 and 2, zero point 1): onnxruntime 1.32 runs a uint8 × uint8
ConvInteger on its fast integer GEMM, but uint8 × int8 7–17× slower on ResNet-18's 3×3 shapes
(`benchmarks/integer_conv_kernels.py`). ConvInteger pads with the zero point,
i.e. with a real 0, as PyTorch does;
"one padding" is an explicit Pad with the code of ±1. No code is 0: the exporter's
optimizer (onnxscript's FuseConvIntegerPad) folds a Pad with value 0 into ConvInteger's
pads, which ConvInteger fills with the zero point instead. The integer sum is exact, so the
output equals the torch module's scale·k + bias.

A W1A32 layer (activations kept real, `dorefa_w1`) has no integer form and is written as
in the `float` lowering. The compile report counts the integer convolutions onnxruntime runs
(`onnxruntime.integer_convs`).
"""

from __future__ import annotations

from collections.abc import Sequence

import onnx
import torch
from onnxscript import FLOAT
from onnxscript import opset18 as op
from torch import fx

from bitfx.backends.onnx.float import (
    TORCH_BINARY_CONV2D,
    TORCH_BINARY_GEMM,
    binary_conv2d_float,
    binary_gemm_float,
    per_channel,
)
from bitfx.backends.onnx.graph_edits import fold_initializer_conversions
from bitfx.backends.onnx.lowerings import register_lowering, torch_onnx_export
from bitfx.backends.onnx.translation import register_translation, translation_table
from bitfx.ir.deploy import deployed

_UINT8 = onnx.TensorProto.UINT8
ZERO_POINT = 2  # uint8 code of the real value 0 in activations; −1 ↦ 1 and +1 ↦ 3
WEIGHT_ZERO_POINT = 1  # in weights: −1 ↦ 0 and +1 ↦ 2


def _codes(x: FLOAT):
    """uint8 codes of sign(x): ZERO_POINT − 1 for −1 (x < 0), ZERO_POINT + 1 for +1."""
    return op.Where(
        op.Less(x, op.CastLike(0.0, x)), op.Cast(ZERO_POINT - 1, to=_UINT8), op.Cast(ZERO_POINT + 1, to=_UINT8)
    )


def _zero_point():
    return op.Cast(ZERO_POINT, to=_UINT8)


def _weight_codes(w: FLOAT):
    """uint8 codes of the ±1 weights: 0 for −1, 2 for +1 (zero point 1)."""
    return op.Cast(op.Add(w, op.CastLike(WEIGHT_ZERO_POINT, w)), to=_UINT8)


def _weight_zero_point():
    return op.Cast(WEIGHT_ZERO_POINT, to=_UINT8)


@register_translation("int8", TORCH_BINARY_CONV2D)
def binary_conv2d_int8(
    X: FLOAT, W: FLOAT, scale: FLOAT, bias: FLOAT,
    kernel_shape: Sequence[int], strides: Sequence[int], pads: Sequence[int], dilations: Sequence[int],
    group: int, in_channels: int, pad_value: int, binarize_input: int,
) -> FLOAT:  # fmt: skip
    if not binarize_input:
        return binary_conv2d_float(
            X, W, scale, bias, kernel_shape, strides, pads, dilations, group, in_channels, pad_value, binarize_input
        )
    codes, conv_pads = _codes(X), list(pads)
    if pad_value != 0 and any(pads):
        top, left, bottom, right = pads
        pad_code = op.Cast(ZERO_POINT + pad_value, to=_UINT8)
        codes, conv_pads = (
            op.Pad(codes, op.Constant(value_ints=[0, 0, top, left, 0, 0, bottom, right]), pad_code),
            [0, 0, 0, 0],
        )
    y = op.ConvInteger(
        codes,
        _weight_codes(W),
        _zero_point(),
        _weight_zero_point(),
        kernel_shape=kernel_shape,
        strides=strides,
        pads=conv_pads,
        dilations=dilations,
        group=group,
    )
    return op.Add(op.DequantizeLinear(y, scale, axis=1), per_channel(bias))


@register_translation("int8", TORCH_BINARY_GEMM)
def binary_gemm_int8(X: FLOAT, W: FLOAT, scale: FLOAT, bias: FLOAT, in_features: int, binarize_input: int) -> FLOAT:
    if not binarize_input:
        return binary_gemm_float(X, W, scale, bias, in_features, binarize_input)
    y = op.MatMulInteger(_codes(X), op.Transpose(_weight_codes(W), perm=[1, 0]), _zero_point(), _weight_zero_point())
    return op.Add(op.DequantizeLinear(y, scale, axis=1), bias)


@register_lowering("int8")
def lower_int8(gm: fx.GraphModule, example_inputs: tuple[torch.Tensor, ...], dynamic_batch: bool) -> onnx.ModelProto:
    """Binary layers as uint8 × int8 ConvInteger / MatMulInteger; everything else as `float`."""
    model = torch_onnx_export(
        deployed(gm), example_inputs, dynamic_batch, custom_translation_table=translation_table("float", "int8")
    )
    fold_initializer_conversions(model)
    return model
