"""The `custom` lowering: one `bitfx` node per binary layer, weights bit-packed (docs/binary-format.md).

1. The deployed graph is exported with the `custom` translation of the binary ops, which
   writes each as one `bitfx.BinaryConv2d` / `bitfx.BinaryGemm` node (attributes from the
   op's integer arguments); everything else is written as by the `float` lowering.
2. Each node's W initializer (±1 floats) is replaced by sign(W) packed into uint64 words,
   channels innermost: C_out × kh × kw × ⌈(C_in/group)/64⌉ (conv), C_out × ⌈K/64⌉ (gemm).
3. The model-local functions of `binary_functions` are added, so stock onnxruntime runs it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
import onnxscript
import torch
from onnx import numpy_helper
from onnxscript import FLOAT
from torch import fx

from bitfx.backends.onnx.binary_float import BINARY_CONV2D, BINARY_GEMM
from bitfx.backends.onnx.binary_functions import DOMAIN, DOMAIN_VERSION, FUNCTIONS
from bitfx.backends.onnx.graph_edits import drop_unused_initializers
from bitfx.backends.onnx.lowering import register_lowering, torch_onnx_export
from bitfx.backends.onnx.translation import register_translation, translation_table
from bitfx.bitpack import pack_signs
from bitfx.errors import LoweringError
from bitfx.ir.deploy import deployed

bitfx_opset = onnxscript.values.Opset(DOMAIN, DOMAIN_VERSION)


@register_translation("custom", BINARY_CONV2D)
@onnxscript.script(bitfx_opset)
def binary_conv2d_custom(
    X: FLOAT, W: FLOAT, scale: FLOAT, bias: FLOAT,
    kernel_shape: Sequence[int], strides: Sequence[int], pads: Sequence[int], dilations: Sequence[int],
    group: int, in_channels: int, pad_value: int, binarize_input: int,
) -> FLOAT:  # fmt: skip
    return bitfx_opset.BinaryConv2d(
        X, W, scale, bias, kernel_shape=kernel_shape, strides=strides, pads=pads, dilations=dilations,
        group=group, in_channels=in_channels, pad_value=pad_value, binarize_input=binarize_input,
    )  # fmt: skip


@register_translation("custom", BINARY_GEMM)
@onnxscript.script(bitfx_opset)
def binary_gemm_custom(X: FLOAT, W: FLOAT, scale: FLOAT, bias: FLOAT, in_features: int, binarize_input: int) -> FLOAT:
    return bitfx_opset.BinaryGemm(X, W, scale, bias, in_features=in_features, binarize_input=binarize_input)


@register_lowering("custom")
def lower_custom(gm: fx.GraphModule, example_inputs: tuple[torch.Tensor, ...], dynamic_batch: bool) -> onnx.ModelProto:
    """Binary layers as `bitfx` ops with bit-packed weights and function bodies; the rest as `float`."""
    model = torch_onnx_export(deployed(gm), example_inputs, dynamic_batch, custom_translation_table=translation_table("float", "custom"))
    pack_binary_weights(model)
    add_binary_functions(model)
    return model


def pack_binary_weights(model: onnx.ModelProto) -> None:
    """Replace the ±1 float W of every `bitfx` node by its packed uint64 form, in place."""
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    packed: dict[str, str] = {}
    for node in graph.node:
        if node.domain != DOMAIN:
            continue
        name = node.input[1]
        if name not in packed:
            if name not in initializers:
                raise LoweringError(f"the weight {name!r} of {node.op_type} node {node.name!r} is not a constant initializer; cannot pack it")
            signs = numpy_helper.to_array(initializers[name])
            if not np.all(np.abs(signs) == 1):
                raise LoweringError(f"the weight {name!r} of {node.op_type} node {node.name!r} is not ±1; export the deployed layer")
            channels_last = signs.transpose(0, 2, 3, 1) if node.op_type == "BinaryConv2d" else signs
            packed[name] = f"{name}_packed"
            graph.initializer.append(numpy_helper.from_array(pack_signs(channels_last), packed[name]))
        node.input[1] = packed[name]
    drop_unused_initializers(model)


def add_binary_functions(model: onnx.ModelProto) -> None:
    """Add the model-local function of every `bitfx` op the graph uses (once each)."""
    opset = next(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx"))
    present = {(function.domain, function.name) for function in model.functions}
    for op_type in sorted({node.op_type for node in model.graph.node if node.domain == DOMAIN}):
        if op_type not in FUNCTIONS:
            raise LoweringError(f"no function body for {DOMAIN}.{op_type}")
        if (DOMAIN, op_type) not in present:
            model.functions.append(FUNCTIONS[op_type](opset))
    if not any(entry.domain == DOMAIN for entry in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid(DOMAIN, DOMAIN_VERSION))


def binary_weight_arrays(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """The packed W of every `bitfx` node of a `custom` file, by node name."""
    initializers = {init.name: init for init in model.graph.initializer}
    return {node.name: numpy_helper.to_array(initializers[node.input[1]]) for node in model.graph.node if node.domain == DOMAIN}
