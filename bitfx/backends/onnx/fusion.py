"""Which quantized layers of an ONNX file onnxruntime actually runs as integer kernels.

A QDQ file marks a quantized conv or matrix product by a DequantizeLinear feeding its
weight; other files (the `int8` binary lowering) hold integer ops such as ConvInteger
directly, and those count as quantized layers too. onnxruntime fuses DequantizeLinear → Conv → QuantizeLinear into QLinearConv (NCHW
in the default domain, NHWC as `com.microsoft.QLinearConv`) and the matrix products into
QLinearMatMul / QGemm / MatMulInteger; whatever it did not fuse runs in float. This compares
the two counts, for any lowering style (a float file has 0 of 0).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx

from bitfx.backends.onnx.optimized import optimized_op_counts
from bitfx.backends.onnx.session import load_model

_CONV_OPS = ("Conv",)
_MATMUL_OPS = ("MatMul", "Gemm")
_FUSED_CONVS = ("QLinearConv", "com.microsoft.QLinearConv", "ConvInteger")
_FUSED_MATMULS = ("QLinearMatMul", "com.microsoft.QGemm", "MatMulInteger", "com.microsoft.MatMulIntegerToFloat", "com.microsoft.DynamicQuantizeMatMul")


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
    """Nodes of `float_ops` whose weight (input 1) comes from a DequantizeLinear, plus the
    nodes of `integer_ops` the file already holds."""
    producers = {output: node.op_type for node in model.graph.node for output in node.output}
    dequantized = sum(
        1 for node in model.graph.node if node.op_type in float_ops and len(node.input) > 1 and producers.get(node.input[1]) == "DequantizeLinear"
    )
    explicit = sum(1 for node in model.graph.node if (f"{node.domain}.{node.op_type}" if node.domain else node.op_type) in integer_ops)
    return dequantized + explicit
