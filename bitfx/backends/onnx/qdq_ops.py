"""The torch ops the `qdq` lowering puts in a graph before export, and their ONNX translations.

Each op computes in torch exactly what its ONNX translation computes:

- `bitfx_qdq::quantize(x, scale, zero_point, lo, hi, tag)` → uint8 codes:
  `QuantizeLinear(x, scale, zero_point)` then `Clip(lo, hi)` on the uint8 codes. The Clip node
  carries the metadata `bitfx.quantizer = tag` and `bitfx.zero_point`, so the codes of every
  quantizer can be found in the file by the name of the torch module that made them;
- `bitfx_qdq::dequantize(codes, scale, zero_point)` → float: `DequantizeLinear`;
- `bitfx_qdq::dequantize_tensor(values, scale, zero_point, axis)` → float: `DequantizeLinear`
  of a stored integer tensor (int8 weights, int32 bias), per tensor or along `axis`.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import torch
from onnxscript import opset18 as op
from torch import Tensor

QUANTIZER_KEY = "bitfx.quantizer"
ZERO_POINT_KEY = "bitfx.zero_point"


@torch.library.custom_op("bitfx_qdq::quantize", mutates_args=())
def quantize(x: Tensor, scale: float, zero_point: int, lo: int, hi: int, tag: str) -> Tensor:
    step = torch.tensor(scale, dtype=torch.float32)
    return torch.clamp(torch.round(x / step) + zero_point, lo, hi).to(torch.uint8)


@quantize.register_fake
def _(x: Tensor, scale: float, zero_point: int, lo: int, hi: int, tag: str) -> Tensor:
    return torch.empty_like(x, dtype=torch.uint8)


@torch.library.custom_op("bitfx_qdq::dequantize", mutates_args=())
def dequantize(codes: Tensor, scale: float, zero_point: int) -> Tensor:
    return (codes.to(torch.int32) - zero_point).to(torch.float32) * torch.tensor(scale, dtype=torch.float32)


@dequantize.register_fake
def _(codes: Tensor, scale: float, zero_point: int) -> Tensor:
    return torch.empty_like(codes, dtype=torch.float32)


@torch.library.custom_op("bitfx_qdq::dequantize_tensor", mutates_args=())
def dequantize_tensor(values: Tensor, scale: Tensor, zero_point: Tensor, axis: int) -> Tensor:
    shape = [1] * values.dim()
    if scale.dim():
        shape[axis] = -1
    return (values.to(torch.int64) - zero_point.reshape(shape)).to(torch.float32) * scale.reshape(shape)


@dequantize_tensor.register_fake
def _(values: Tensor, scale: Tensor, zero_point: Tensor, axis: int) -> Tensor:
    return torch.empty_like(values, dtype=torch.float32)


def _constant(value: float | int, dtype: type) -> object:
    return op.Constant(value=ir.tensor(np.array(value, dtype=dtype)))


def _translate_quantize(x, scale: float, zero_point: int, lo: int, hi: int, tag: str):
    codes = op.QuantizeLinear(x, _constant(scale, np.float32), _constant(zero_point, np.uint8))
    clipped = op.Clip(codes, _constant(lo, np.uint8), _constant(hi, np.uint8))
    clipped.producer().metadata_props[QUANTIZER_KEY] = tag
    clipped.producer().metadata_props[ZERO_POINT_KEY] = str(zero_point)
    return clipped


def _translate_dequantize(codes, scale: float, zero_point: int):
    return op.DequantizeLinear(codes, _constant(scale, np.float32), _constant(zero_point, np.uint8))


def _translate_dequantize_tensor(values, scale, zero_point, axis: int):
    return op.DequantizeLinear(values, scale, zero_point, axis=axis)


TRANSLATIONS = {
    torch.ops.bitfx_qdq.quantize.default: _translate_quantize,
    torch.ops.bitfx_qdq.dequantize.default: _translate_dequantize,
    torch.ops.bitfx_qdq.dequantize_tensor.default: _translate_dequantize_tensor,
}
