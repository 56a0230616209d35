"""Summary table and op counts of an ONNX file, in the same form as `bitfx.ir.summary`."""

from __future__ import annotations

import math
from collections import Counter

import onnx
from onnx import helper, numpy_helper, shape_inference

from bitfx.ir.cost import NodeCost
from bitfx.ir.summary import Summary, SummaryRow

_MAC_OPS = {"Conv", "ConvInteger", "QLinearConv", "Gemm", "MatMul", "MatMulInteger", "QLinearMatMul"}


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    """How many nodes of each op type the main graph has (`domain.Op` outside the default domain)."""
    return dict(sorted(Counter(_op_name(node) for node in model.graph.node).items()))


def onnx_summary(model: onnx.ModelProto) -> Summary:
    """One row per node: output shape, the initializers it reads (params, bytes) and MACs per sample.

    Initializer bytes are what the file stores (a bit-packed uint8 tensor counts its bytes).
    Each initializer is counted once, at its first reader.
    """
    inferred = _infer(model)
    shapes = _value_shapes(inferred)
    initializers = {init.name: init for init in model.graph.initializer}
    seen: set[str] = set()
    rows = []
    for index, node in enumerate(model.graph.node):
        params = bits = 0
        for name in node.input:
            if name in initializers and name not in seen:
                seen.add(name)
                array = numpy_helper.to_array(initializers[name])
                params += array.size
                bits += array.nbytes * 8
        out_shape = shapes.get(node.output[0]) if node.output else None
        cost = NodeCost(params=params, macs=_macs(node, shapes, out_shape), weight_bits=bits)
        rows.append(SummaryRow(node.name or f"node{index}", "onnx", _op_name(node), out_shape, cost))
    return Summary(rows, sum((r.cost for r in rows), NodeCost()))


def _op_name(node: onnx.NodeProto) -> str:
    return f"{node.domain}.{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type


def _infer(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return shape_inference.infer_shapes(model)
    except Exception:
        return model


def _value_shapes(model: onnx.ModelProto) -> dict[str, tuple]:
    shapes = {}
    for value in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        tensor_type = value.type.tensor_type
        if tensor_type.HasField("shape"):
            shapes[value.name] = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tensor_type.shape.dim)
    for init in model.graph.initializer:
        shapes[init.name] = tuple(init.dims)
    return shapes


def _binary_macs(node: onnx.NodeProto, per_sample_out: int) -> int:
    """Bit-MACs of a `bitfx` binary node from its attributes (docs/binary-format.md)."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "BinaryConv2d":
        return per_sample_out * (attrs["in_channels"] // attrs["group"]) * math.prod(attrs["kernel_shape"])
    if node.op_type == "BinaryGemm":
        return per_sample_out * attrs["in_features"]
    return 0


def _macs(node: onnx.NodeProto, shapes: dict[str, tuple], out_shape: tuple | None) -> int:
    """MACs per sample of conv and matrix-product nodes, binary ones included (0 for others
    or unknown shapes)."""
    if not out_shape or not all(isinstance(d, int) for d in out_shape[1:]):
        return 0
    if node.domain == "bitfx":
        return _binary_macs(node, math.prod(out_shape[1:]))
    if node.op_type not in _MAC_OPS:
        return 0
    weight_index = 3 if node.op_type in ("QLinearConv", "QLinearMatMul") else 1
    weight = shapes.get(node.input[weight_index]) if len(node.input) > weight_index else None
    if not weight or not all(isinstance(d, int) for d in weight):
        return 0
    per_sample = math.prod(out_shape[1:])
    if "Conv" in node.op_type:
        return per_sample * math.prod(weight[1:])
    trans_b = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "transB"), 0)
    return per_sample * (weight[1] if trans_b else weight[0])
