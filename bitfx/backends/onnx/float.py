"""The `float` lowering: standard float ONNX ops that any runtime runs.

`torch.onnx.export(dynamo=True)` writes the graph; layers with a deployed form (binary layers)
are exported in it, and the binary ops are written by the `float` translations below:

    bitfx::binary_conv2d → [Pad(pad_value)] → Conv(sign(X), sign(W)) → Mul(scale) → Add(bias)
    bitfx::binary_gemm   → Gemm(sign(X), sign(W)ᵀ) → Mul(scale) → Add(bias)

sign(x) is written Where(x < 0, −1, 1) (ONNX's Sign gives 0 at 0; ours gives +1); the
weights of a deployed layer are already ±1. Every other style falls back to these for
whatever it does not rewrite.

The product ±1 · ±1 sums to an exact integer k in float32, and torch computes scale·k + bias.
A binary output is often exactly 0 (k = 0 and no bias), where the next sign must give +1,
so the scale must not be folded into the weights (a sum of ±scale terms is rounded and
lands a few ulps off 0). onnxruntime folds `Mul(Conv(…), constant)` into the Conv; it does
not fold `Mul(constant, Conv(…))`, so the scale is the first input of the Mul.
"""

from __future__ import annotations

from collections.abc import Sequence

import onnx
import torch
from onnxscript import FLOAT
from onnxscript import opset18 as op
from torch import fx

from bitfx.backends.onnx.lowerings import register_lowering, torch_onnx_export
from bitfx.backends.onnx.translation import register_translation, translation_table
from bitfx.ir.binary import ops  # noqa: F401  (defines the torch.ops.bitfx ops)
from bitfx.ir.deploy import deployed

TORCH_BINARY_CONV2D = torch.ops.bitfx.binary_conv2d.default
TORCH_BINARY_GEMM = torch.ops.bitfx.binary_gemm.default


def sign_pm1(x: FLOAT) -> FLOAT:
    """sign with sign(0) = +1, in standard ops."""
    return op.Where(op.Less(x, op.CastLike(0.0, x)), op.CastLike(-1.0, x), op.CastLike(1.0, x))


def pad_with_value(x: FLOAT, pads: Sequence[int], value: float) -> FLOAT:
    """Pad the two spatial axes of N×C×H×W by `pads` = [top, left, bottom, right] with `value`."""
    top, left, bottom, right = pads
    return op.Pad(x, op.Constant(value_ints=[0, 0, top, left, 0, 0, bottom, right]), op.CastLike(value, x))


def per_channel(vector: FLOAT) -> FLOAT:
    """A length-C vector shaped C×1×1, to scale the channels of N×C×H×W."""
    return op.Unsqueeze(vector, op.Constant(value_ints=[1, 2]))


@register_translation("float", TORCH_BINARY_CONV2D)
def binary_conv2d_float(
    X: FLOAT, W: FLOAT, scale: FLOAT, bias: FLOAT,
    kernel_shape: Sequence[int], strides: Sequence[int], pads: Sequence[int], dilations: Sequence[int],
    group: int, in_channels: int, pad_value: int, binarize_input: int,
) -> FLOAT:  # fmt: skip
    activations = sign_pm1(X) if binarize_input else X
    conv_pads = list(pads)
    if pad_value != 0 and any(pads):
        activations, conv_pads = pad_with_value(activations, pads, float(pad_value)), [0, 0, 0, 0]
    y = op.Conv(
        activations, W, kernel_shape=kernel_shape, strides=strides, pads=conv_pads, dilations=dilations, group=group
    )
    return op.Add(op.Mul(per_channel(scale), y), per_channel(bias))


@register_translation("float", TORCH_BINARY_GEMM)
def binary_gemm_float(X: FLOAT, W: FLOAT, scale: FLOAT, bias: FLOAT, in_features: int, binarize_input: int) -> FLOAT:
    activations = sign_pm1(X) if binarize_input else X
    return op.Add(op.Mul(scale, op.Gemm(activations, W, transB=1)), bias)


@register_lowering("float")
def lower_float(gm: fx.GraphModule, example_inputs: tuple[torch.Tensor, ...], dynamic_batch: bool) -> onnx.ModelProto:
    """Standard ONNX float ops, for any runtime. Layers with a deployed form (binary layers)
    are exported in it, their ops written by the `float` translation table."""
    return torch_onnx_export(
        deployed(gm), example_inputs, dynamic_batch, custom_translation_table=translation_table("float")
    )
