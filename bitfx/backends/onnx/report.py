"""Reports on an ONNX file: its summary table and op counts (in the same form as
`bitfx.ir.summary`), the op counts of the graph onnxruntime actually runs, and which quantized
layers onnxruntime runs as integer kernels.

onnxruntime rewrites a model when it loads it (for example fusing
DequantizeLinear → Conv → QuantizeLinear into QLinearConv). Whether integer kernels run is
only visible in that optimized graph, so lowering styles report its op counts. A QDQ file marks
a quantized conv or matrix product by a DequantizeLinear feeding its weight; other files (the
`int8` binary lowering) hold integer ops such as ConvInteger directly, and those count as
quantized layers too. onnxruntime fuses DequantizeLinear → Conv → QuantizeLinear into
QLinearConv (NCHW in the default domain, NHWC as `com.microsoft.QLinearConv`) and the matrix
products into QLinearMatMul / QGemm / MatMulInteger; whatever it did not fuse runs in float.
`quantized_layer_fusion` compares the two counts, for any lowering style (a float file has 0 of 0).
"""

from __future__ import annotations

import math
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import onnx
from onnx import helper, numpy_helper, shape_inference

from bitfx.backends.onnx.session import load_model, session
from bitfx.format import BINARY_CONV2D, BINARY_GEMM, DOMAIN
from bitfx.ir.cost import NodeCost
from bitfx.ir.summary import Summary, SummaryRow

_CONV_OPS = ("Conv",)
_MATMUL_OPS = ("MatMul", "Gemm")
_FUSED_CONVS = ("QLinearConv", "com.microsoft.QLinearConv", "ConvInteger")
_FUSED_MATMULS = (
    "QLinearMatMul",
    "com.microsoft.QGemm",
    "MatMulInteger",
    "com.microsoft.MatMulIntegerToFloat",
    "com.microsoft.DynamicQuantizeMatMul",
)


# ops that rearrange a weight without changing its values, which a weight's path to its layer may hold
_LAYOUT_OPS = ("Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity")

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
            shapes[value.name] = tuple(
                d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tensor_type.shape.dim
            )
    for init in model.graph.initializer:
        shapes[init.name] = tuple(init.dims)
    return shapes


def _binary_macs(node: onnx.NodeProto, per_sample_out: int) -> int:
    """Bit-MACs of a `bitfx` binary node from its attributes (docs/binary-format.md)."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == BINARY_CONV2D:
        return per_sample_out * (attrs["in_channels"] // attrs["group"]) * math.prod(attrs["kernel_shape"])
    if node.op_type == BINARY_GEMM:
        return per_sample_out * attrs["in_features"]
    return 0


def _macs(node: onnx.NodeProto, shapes: dict[str, tuple], out_shape: tuple | None) -> int:
    """MACs per sample of conv and matrix-product nodes, binary ones included (0 for others
    or unknown shapes)."""
    if not out_shape or not all(isinstance(d, int) for d in out_shape[1:]):
        return 0
    if node.domain == DOMAIN:
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


def optimized_op_counts(path: str | Path) -> dict[str, int]:
    """Op counts of the graph onnxruntime (CPU, all optimizations) builds from `path`."""
    with tempfile.TemporaryDirectory() as tmp:
        optimized = Path(tmp) / "optimized.onnx"
        session(path, optimized_model_path=optimized)
        return op_counts(load_model(optimized))


def quantized_layer_fusion(path: str | Path, optimized_ops: dict[str, int] | None = None) -> dict[str, Any]:
    """Counts of quantized convs / matrix products in the file and of the integer kernels
    onnxruntime built for them; `all_fused` is True when every quantized one is fused.
    `optimized_ops` (from `optimized_op_counts(path)`) saves building the session again."""
    model = load_model(path)
    quantized_convs = _count_quantized(model, _CONV_OPS, _FUSED_CONVS)
    quantized_matmuls = _count_quantized(model, _MATMUL_OPS, _FUSED_MATMULS)
    optimized = optimized_ops if optimized_ops is not None else optimized_op_counts(path)
    fused_convs = sum(optimized.get(op, 0) for op in _FUSED_CONVS)
    fused_matmuls = sum(optimized.get(op, 0) for op in _FUSED_MATMULS)
    return {
        "quantized_convs": quantized_convs,
        "fused_convs": fused_convs,
        "quantized_matmuls": quantized_matmuls,
        "fused_matmuls": fused_matmuls,
        "all_fused": fused_convs >= quantized_convs and fused_matmuls >= quantized_matmuls,
    }


def _count_quantized(model: onnx.ModelProto, float_ops: tuple[str, ...], integer_ops: tuple[str, ...]) -> int:
    """Nodes of `float_ops` whose weight (input 1) comes from a DequantizeLinear, possibly through ops
    that only change its layout (a Linear's weight is often transposed), plus the nodes of
    `integer_ops` the file already holds."""
    producers = {output: node for node in model.graph.node for output in node.output}
    dequantized = sum(
        1
        for node in model.graph.node
        if node.op_type in float_ops and len(node.input) > 1 and _dequantized(producers, node.input[1])
    )
    explicit = sum(
        1
        for node in model.graph.node
        if (f"{node.domain}.{node.op_type}" if node.domain else node.op_type) in integer_ops
    )
    return dequantized + explicit


def _dequantized(producers: dict[str, onnx.NodeProto], name: str) -> bool:
    """True when the tensor `name` is made by a DequantizeLinear, directly or through layout-only ops."""
    node = producers.get(name)
    while node is not None and node.op_type in _LAYOUT_OPS:
        node = producers.get(node.input[0])
    return node is not None and node.op_type == "DequantizeLinear"
