"""Which QDQ layouts onnxruntime fuses into QLinearConv: the measurements behind the `qdq` lowering.

A residual block in the PAMS layout — quantize the block input, conv → ReLU → quantize →
conv → quantize, add the quantized shortcut, quantize, one more conv — is written by hand
with onnx.helper in each variant below. For each variant: how many of its 3 convs the
optimized onnxruntime graph runs as QLinearConv, and whether it reproduces the symmetric
[−q, q] codes of PAMS (the `qdq` lowering's answer is the first row).

    python benchmarks/qdq_layouts.py
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from bitfx.backends.onnx import optimized_op_counts
from bitfx.ir.table import format_table

CHANNELS = 16


def residual_block(
    activations: str, clip: bool, dq_per_consumer: bool, weights: int = TensorProto.INT8, bias_scale_ok: bool = True
) -> onnx.ModelProto:
    """The block in one layout: activations 'uint8+128' (zero point 128) or 'int8' (zero point 0)."""
    rng = np.random.default_rng(0)
    nodes, inits = [], []
    zero_dtype, zero = (np.uint8, 128) if activations == "uint8+128" else (np.int8, 0)

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(value, name))
        return name

    def quantize(x: str, scale: float, low: int, tag: str) -> tuple[str, str, str]:
        s, z = const(f"{tag}_s", np.array(scale, np.float32)), const(f"{tag}_z", np.array(zero, zero_dtype))
        nodes.append(helper.make_node("QuantizeLinear", [x, s, z], [f"{tag}_q"]))
        out = f"{tag}_q"
        if clip:
            bounds = [
                const(f"{tag}_lo", np.array(zero + low, zero_dtype)),
                const(f"{tag}_hi", np.array(zero + 127, zero_dtype)),
            ]
            nodes.append(helper.make_node("Clip", [out, *bounds], [f"{tag}_c"]))
            out = f"{tag}_c"
        return out, s, z

    def dequantize(codes: tuple[str, str, str], tag: str) -> str:
        nodes.append(helper.make_node("DequantizeLinear", list(codes), [tag]))
        return tag

    def conv(x: str, input_scale: float, tag: str) -> str:
        w = np.clip(np.round(rng.standard_normal((CHANNELS, CHANNELS, 3, 3)) * 40), -127, 127)
        scale = np.full(CHANNELS, 0.003, np.float32)
        if weights == TensorProto.INT8:
            inits.append(numpy_helper.from_array(w.astype(np.int8), f"{tag}_w"))
            inits.append(numpy_helper.from_array(np.zeros(CHANNELS, np.int8), f"{tag}_wz"))
        else:
            w = np.clip(w, -8, 7)
            inits.append(helper.make_tensor(f"{tag}_w", weights, w.shape, w.astype(int).flatten().tolist()))
            inits.append(helper.make_tensor(f"{tag}_wz", weights, (CHANNELS,), [0] * CHANNELS))
        const(f"{tag}_ws", scale)
        nodes.append(
            helper.make_node("DequantizeLinear", [f"{tag}_w", f"{tag}_ws", f"{tag}_wz"], [f"{tag}_wf"], axis=0)
        )
        bias_scale = np.float32(input_scale) * scale * (1.0 if bias_scale_ok else 2.0)
        const(f"{tag}_b", rng.integers(-1000, 1000, CHANNELS).astype(np.int32))
        const(f"{tag}_bs", bias_scale.astype(np.float32))
        const(f"{tag}_bz", np.zeros(CHANNELS, np.int32))
        nodes.append(
            helper.make_node("DequantizeLinear", [f"{tag}_b", f"{tag}_bs", f"{tag}_bz"], [f"{tag}_bf"], axis=0)
        )
        nodes.append(helper.make_node("Conv", [x, f"{tag}_wf", f"{tag}_bf"], [f"{tag}_y"], pads=[1, 1, 1, 1]))
        return f"{tag}_y"

    block_in = quantize("x", 0.05, -127, "a0")
    shared = dequantize(block_in, "a0_d")
    hidden = quantize(conv(shared, 0.05, "c1"), 0.04, 0, "a1")
    branch = quantize(conv(dequantize(hidden, "a1_d"), 0.04, "c2"), 0.03, -127, "a2")
    shortcut = dequantize(block_in, "a0_d2") if dq_per_consumer else shared
    nodes.append(helper.make_node("Add", [dequantize(branch, "a2_d"), shortcut], ["sum"]))
    total = quantize("sum", 0.06, -127, "a3")
    out = quantize(conv(dequantize(total, "a3_d"), 0.06, "c3"), 0.05, -127, "a4")
    dequantize(out, "y")
    shape = ["N", CHANNELS, 16, 16]
    graph = helper.make_graph(
        nodes,
        "block",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


VARIANTS = [
    (
        "uint8, zero point 128, Clip to [−q, q], one DQ per consumer (the qdq lowering)",
        dict(activations="uint8+128", clip=True, dq_per_consumer=True),
        "yes",
    ),
    (
        "uint8, zero point 128, no Clip",
        dict(activations="uint8+128", clip=False, dq_per_consumer=True),
        "no: −128 reachable",
    ),
    (
        "int8, zero point 0, Clip to [−q, q], one DQ per consumer",
        dict(activations="int8", clip=True, dq_per_consumer=True),
        "yes",
    ),
    (
        "int8, zero point 0, no Clip, one DQ per consumer",
        dict(activations="int8", clip=False, dq_per_consumer=True),
        "no: −128 reachable",
    ),
    (
        "int8, zero point 0, no Clip, shared DQ",
        dict(activations="int8", clip=False, dq_per_consumer=False),
        "no: −128 reachable",
    ),
    (
        "uint8+128 with Clip, INT4 weights (opset 21)",
        dict(activations="uint8+128", clip=True, dq_per_consumer=True, weights=TensorProto.INT4),
        "yes",
    ),
    (
        "uint8+128 with Clip, bias scale ≠ s_in·s_w",
        dict(activations="uint8+128", clip=True, dq_per_consumer=True, bias_scale_ok=False),
        "yes",
    ),
]


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, options, exact in VARIANTS:
            model = residual_block(**options)
            onnx.checker.check_model(model, full_check=True)
            path = Path(tmp) / "block.onnx"
            onnx.save(model, path)
            ops = Counter(optimized_op_counts(path))
            fused = ops["QLinearConv"] + ops["com.microsoft.QLinearConv"]
            rows.append((label, f"{fused}/3", ops["com.microsoft.QLinearAdd"], exact))
    print(format_table(("layout", "convs fused", "QLinearAdd", "PAMS codes exact"), rows, (False, True, True, False)))


if __name__ == "__main__":
    main()
