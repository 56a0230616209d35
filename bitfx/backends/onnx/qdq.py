"""The `qdq` lowering: a PAMS-quantized graph as standard ONNX QuantizeLinear/DequantizeLinear
around float ops, laid out so that onnxruntime runs every quantized conv as QLinearConv.

Layout (each choice measured on onnxruntime 1.32, x86; see docs/pams.md):

- activation codes are **uint8 with zero point 128**: the same grid as PAMS's int8 codes
  with zero point 0 (code k is stored as k + 128). onnxruntime's x86 kernels take uint8
  activations; int8 activations are only fused after onnxruntime rewrites a direct Q→DQ pair
  to uint8 itself, which the Clip below prevents (0 of 3 convs fused in our test);
- every QuantizeLinear is followed by a **Clip on the uint8 codes** to PAMS's narrow range
  [−q, q] (uint8 saturation alone allows −128, and nothing at all for 2–7 bits); a ReLU in
  front of a quantizer becomes a lower bound of 0 instead of a float op;
- weights are **int8 initializers** (2–7-bit codes stored in int8: onnxruntime does not fuse
  a Conv whose weights are INT4), scale max|W|/q per tensor or per output channel (axis 0);
  the bias is **int32 with scale s_in · s_w**, which onnxruntime requires for the fusion;
- `× scalar` after a quantized layer (EDSR's res_scale) is folded into its weight scale and
  bias, so nothing sits between the Conv and its output QuantizeLinear;
- **one DequantizeLinear per consumer** (the exporter merges identical ones), because
  onnxruntime fuses a DequantizeLinear only into a node that is its sole consumer.

Everything else (float layers, pixel shuffle, mean shift) is exported by
`torch.onnx.export(dynamo=True)` as in the `float` lowering.

Before export the quantizers and quantized layers become these torch ops, each computing in
torch exactly what its ONNX translation computes:

- `bitfx_qdq::quantize(x, scale, zero_point, lo, hi, tag)` → uint8 codes:
  `QuantizeLinear(x, scale, zero_point)` then `Clip(lo, hi)` on the uint8 codes. The Clip node
  carries the metadata `bitfx.quantizer = tag` and `bitfx.zero_point`, so the codes of every
  quantizer can be found in the file by the name of the torch module that made them;
- `bitfx_qdq::dequantize(codes, scale, zero_point)` → float: `DequantizeLinear`;
- `bitfx_qdq::dequantize_tensor(values, scale, zero_point, axis)` → float: `DequantizeLinear`
  of a stored integer tensor (int8 weights, int32 bias), per tensor or along `axis`.
"""

from __future__ import annotations

import copy

import numpy as np
import onnx
import onnx_ir as ir
import torch
import torch.nn.functional as F
from onnxscript import opset18 as op
from torch import Tensor, fx, nn

from bitfx.backends.onnx.lowerings import register_lowering, torch_onnx_export
from bitfx.errors import LoweringError
from bitfx.ir.gate import fold_gates
from bitfx.ir.output_chain import OutputChain, chain_before, tensor_input
from bitfx.ir.quant import QUANT_LAYER_TYPES, ActQuant
from bitfx.ir.rewrite import is_relu

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


ACTIVATION_ZERO_POINT = 128
_QUANTIZE = torch.ops.bitfx_qdq.quantize.default
_DEQUANTIZE = torch.ops.bitfx_qdq.dequantize.default
_DEQUANTIZE_TENSOR = torch.ops.bitfx_qdq.dequantize_tensor.default
_CONV_FUNCTIONS = {nn.Conv1d: F.conv1d, nn.Conv2d: F.conv2d, nn.Conv3d: F.conv3d}


@register_lowering("qdq", expresses_pams=True)
def lower_qdq(gm: fx.GraphModule, example_inputs: tuple[torch.Tensor, ...], dynamic_batch: bool) -> onnx.ModelProto:
    """Integer QDQ ONNX for a graph quantized by the `pams` pass (float layers stay float)."""
    model = torch_onnx_export(prepare_qdq(gm), example_inputs, dynamic_batch, custom_translation_table=TRANSLATIONS)
    dequantize_per_consumer(model)
    return model


def prepare_qdq(gm: fx.GraphModule) -> fx.GraphModule:
    """A copy of `gm` whose quantizers and quantized layers are the integer ops below (gates folded)."""
    work = copy.deepcopy(fold_gates(gm))
    folds, input_scales = _lower_quantizers(work)
    for node in list(work.graph.nodes):
        if _is_quant_layer(work, node):
            _lower_layer(work, node, folds.get(node), input_scales.get(node))
    work.graph.eliminate_dead_code()
    work.delete_all_unused_submodules()
    work.recompile()
    return work


def _is_quant_layer(gm: fx.GraphModule, node: fx.Node) -> bool:
    return node.op == "call_module" and isinstance(gm.get_submodule(node.target), QUANT_LAYER_TYPES)


def _lower_quantizers(gm: fx.GraphModule) -> tuple[dict[fx.Node, OutputChain], dict[fx.Node, torch.Tensor]]:
    """Replace every `ActQuant` by quantize + one dequantize per user. Returns the output chains
    folded into layers, and the input scale of every quantized layer that reads a quantizer."""
    graph = gm.graph
    folds: dict[fx.Node, OutputChain] = {}
    input_scales: dict[fx.Node, torch.Tensor] = {}
    for node in list(graph.nodes):
        if node.op != "call_module" or not isinstance(gm.get_submodule(node.target), ActQuant):
            continue
        quantizer = gm.get_submodule(node.target)
        source, low = node.args[0], -quantizer.q
        chain = chain_before(gm, source, lambda n: _is_quant_layer(gm, n)) if len(source.users) == 1 else None
        if chain is not None:
            folds[chain.layer] = chain
            source, low = chain.layer, (0 if chain.relu else low)
        elif is_relu(gm, source) and len(source.users) == 1:
            source, low = tensor_input(source), 0
        scale = quantizer.scale().detach().to(torch.float32)
        zero = ACTIVATION_ZERO_POINT
        with graph.inserting_before(node):
            codes = graph.call_function(
                _QUANTIZE, (source, float(scale), zero, zero + low, zero + quantizer.q, node.target)
            )
        for user in list(node.users):
            with graph.inserting_before(user):
                value = graph.call_function(_DEQUANTIZE, (codes, float(scale), zero))
            user.replace_input_with(node, value)
            if _is_quant_layer(gm, user):
                input_scales[user] = scale
        graph.erase_node(node)
    return folds, input_scales


def _lower_layer(
    gm: fx.GraphModule, node: fx.Node, chain: OutputChain | None, input_scale: torch.Tensor | None
) -> None:
    """Replace a quantized layer by DequantizeLinear(int8 weights) → conv/linear, with the
    factor of a folded output chain in the weight scale and bias, and an int32 bias when the
    input scale is known."""
    layer = gm.get_submodule(node.target)
    factor = chain.factor if chain is not None else 1.0
    sign = 1.0 if factor > 0 else -1.0
    with torch.no_grad():
        weight_scale = (layer.weight_scale() * abs(factor)).to(torch.float32)
        weight_codes = (layer.weight_codes() * sign).to(torch.int8)
        prefix = node.target.replace(".", "_")
        with gm.graph.inserting_before(node):
            weight = _dequantize_buffer(gm, f"{prefix}_weight", weight_codes, weight_scale)
            bias = None
            if layer.bias is not None:
                scaled_bias = layer.bias.detach().double() * factor
                if input_scale is not None:
                    bias_scale = input_scale * weight_scale  # float32, as onnxruntime checks it
                    codes = torch.round(scaled_bias / bias_scale.double())
                    if codes.abs().max() >= 2**31:
                        raise LoweringError(
                            f"the bias of {node.target!r} does not fit int32 "
                            f"at scale s_in·s_w = {float(bias_scale.min()):.3g} (its input quantizer's α is tiny); "
                            "recalibrate with representative data or keep the layer float"
                        )
                    bias = _dequantize_buffer(gm, f"{prefix}_bias", codes.to(torch.int32), bias_scale)
                else:
                    bias = _buffer(gm, f"{prefix}_bias", scaled_bias.to(torch.float32))
            if isinstance(layer, nn.Linear):
                output = gm.graph.call_function(F.linear, (node.args[0], weight, bias))
            else:
                conv = next(fn for cls, fn in _CONV_FUNCTIONS.items() if isinstance(layer, cls))
                output = gm.graph.call_function(
                    conv, (node.args[0], weight, bias, layer.stride, layer.padding, layer.dilation, layer.groups)
                )
    node.replace_all_uses_with(output)
    gm.graph.erase_node(node)


def _buffer(gm: fx.GraphModule, name: str, tensor: torch.Tensor) -> fx.Node:
    gm.register_buffer(name, tensor)
    return gm.graph.get_attr(name)


def _dequantize_buffer(gm: fx.GraphModule, name: str, codes: torch.Tensor, scale: torch.Tensor) -> fx.Node:
    """DequantizeLinear(codes, scale, 0) along axis 0, from buffers registered on `gm`."""
    zero = torch.zeros(scale.shape, dtype=codes.dtype)
    args = (
        _buffer(gm, f"{name}_codes", codes),
        _buffer(gm, f"{name}_scale", scale),
        _buffer(gm, f"{name}_zero_point", zero),
        0,
    )
    return gm.graph.call_function(_DEQUANTIZE_TENSOR, args)


def dequantize_per_consumer(model: onnx.ModelProto) -> None:
    """Give every consumer of a DequantizeLinear output its own DequantizeLinear node."""
    graph = model.graph
    graph_outputs = {value.name for value in graph.output}
    nodes = list(graph.node)
    rebuilt: list[onnx.NodeProto] = []
    for node in nodes:
        rebuilt.append(node)
        if node.op_type != "DequantizeLinear" or node.domain not in ("", "ai.onnx"):
            continue
        output = node.output[0]
        readers = [(reader, index) for reader in nodes for index, name in enumerate(reader.input) if name == output]
        keep = 0 if output in graph_outputs else 1
        for copy_index, (reader, index) in enumerate(readers[keep:], start=1):
            clone = onnx.NodeProto()
            clone.CopyFrom(node)
            clone.name = f"{node.name}_consumer{copy_index}"
            clone.output[0] = f"{output}_consumer{copy_index}"
            reader.input[index] = clone.output[0]
            rebuilt.append(clone)
    del graph.node[:]
    graph.node.extend(rebuilt)
