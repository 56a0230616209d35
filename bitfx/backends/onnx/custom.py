"""The `custom` lowering: one `bitfx` node per binary layer, weights bit-packed (docs/binary-format.md).

1. The deployed graph is exported with the `custom` translation of the binary ops, which
   writes each as one `bitfx.BinaryConv2d` / `bitfx.BinaryGemm` node (attributes from the
   op's integer arguments); everything else is written as by the `float` lowering.
2. Each node's W initializer (±1 floats) is replaced by sign(W) packed into uint64 words,
   channels innermost: C_out × kh × kw × ⌈(C_in/group)/64⌉ (conv), C_out × ⌈K/64⌉ (gemm).
3. Model-local ONNX functions with the body of each op in standard ops are added, so stock
   onnxruntime runs the file unchanged (it inlines the body); a runtime with its own kernel
   for the op name (the packed runtime) uses that instead. The bodies follow
   docs/binary-format.md literally:

    A = binarize_input ? Where(X < 0, −1, +1) : X
    A = Pad(A, [0, 0, top, left, 0, 0, bottom, right], pad_value)
    W = 1 − 2·((W_packed >> [0..63]) & 1), flattened per (c_out, kh, kw), cut to in_channels/group, to OIHW
    Y = Mul(scale, Conv(A, W)) + bias          (scale first: see the `float` lowering)

   Attributes reach the body through attribute references (`Constant<value_int = @pad_value>`).

The domain, op and attribute names and the packing come from `bitfx.format`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
import onnxscript
import torch
from onnx import AttributeProto, TensorProto, helper, numpy_helper
from onnxscript import FLOAT
from torch import fx

from bitfx.backends.onnx.float import TORCH_BINARY_CONV2D, TORCH_BINARY_GEMM
from bitfx.backends.onnx.graph_edits import drop_unused_initializers
from bitfx.backends.onnx.lowerings import register_lowering, torch_onnx_export
from bitfx.backends.onnx.translation import register_translation, translation_table
from bitfx.errors import LoweringError
from bitfx.format import (
    BINARY_CONV2D,
    BINARY_GEMM,
    CONV_ATTRIBUTES,
    DOMAIN,
    DOMAIN_VERSION,
    GEMM_ATTRIBUTES,
    pack_signs,
)
from bitfx.ir.deploy import deployed

bitfx_opset = onnxscript.values.Opset(DOMAIN, DOMAIN_VERSION)


@register_translation("custom", TORCH_BINARY_CONV2D)
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


@register_translation("custom", TORCH_BINARY_GEMM)
@onnxscript.script(bitfx_opset)
def binary_gemm_custom(X: FLOAT, W: FLOAT, scale: FLOAT, bias: FLOAT, in_features: int, binarize_input: int) -> FLOAT:
    return bitfx_opset.BinaryGemm(X, W, scale, bias, in_features=in_features, binarize_input=binarize_input)


@register_lowering("custom")
def lower_custom(gm: fx.GraphModule, example_inputs: tuple[torch.Tensor, ...], dynamic_batch: bool) -> onnx.ModelProto:
    """Binary layers as `bitfx` ops with bit-packed weights and function bodies; the rest as `float`."""
    model = torch_onnx_export(
        deployed(gm), example_inputs, dynamic_batch, custom_translation_table=translation_table("float", "custom")
    )
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
                raise LoweringError(
                    f"the weight {name!r} of {node.op_type} node {node.name!r} is not a constant initializer; "
                    "cannot pack it"
                )
            signs = numpy_helper.to_array(initializers[name])
            if not np.all(np.abs(signs) == 1):
                raise LoweringError(
                    f"the weight {name!r} of {node.op_type} node {node.name!r} is not ±1; export the deployed layer"
                )
            channels_last = signs.transpose(0, 2, 3, 1) if node.op_type == BINARY_CONV2D else signs
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
    return {
        node.name: numpy_helper.to_array(initializers[node.input[1]])
        for node in model.graph.node
        if node.domain == DOMAIN
    }


def _ref(name: str, ref: str, kind: int) -> AttributeProto:
    """An attribute `name` that takes the value of the function's attribute `ref`."""
    attribute = AttributeProto(name=name, ref_attr_name=ref, type=kind)
    return attribute


def _constant(output: str, **value: object) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [output], **value)


def _constant_ref(output: str, kind: str, ref: str) -> onnx.NodeProto:
    """`output = Constant<value_int(s) = @ref>`."""
    node = helper.make_node("Constant", [], [output])
    node.attribute.append(_ref(kind, ref, AttributeProto.INTS if kind == "value_ints" else AttributeProto.INT))
    return node


def _binarized_input_nodes() -> list[onnx.NodeProto]:
    """A = Where(binarize_input, Where(X < 0, −1, 1), X)."""
    return [
        _constant("zero", value=numpy_helper.from_array(np.array(0.0, np.float32))),
        _constant("one", value=numpy_helper.from_array(np.array(1.0, np.float32))),
        _constant("minus_one", value=numpy_helper.from_array(np.array(-1.0, np.float32))),
        helper.make_node("Less", ["X", "zero"], ["negative"]),
        helper.make_node("Where", ["negative", "minus_one", "one"], ["signs"]),
        _constant_ref("binarize_flag", "value_int", "binarize_input"),
        helper.make_node("Cast", ["binarize_flag"], ["binarize"], to=TensorProto.BOOL),
        helper.make_node("Where", ["binarize", "signs", "X"], ["A"]),
    ]


def _unpack_nodes(cut_axis: int, count: str) -> list[onnx.NodeProto]:
    """Unpack uint64 `W` (…, words) into ±1 float `W_cut` (…, count) along the last axis."""
    flat_shape = [0] * cut_axis + [-1]
    return [
        _constant("shifts", value=numpy_helper.from_array(np.arange(64, dtype=np.uint64))),
        _constant("one_bit", value=numpy_helper.from_array(np.array(1, np.uint64))),
        _constant("last_axis", value_ints=[-1]),
        helper.make_node("Unsqueeze", ["W", "last_axis"], ["W_words"]),
        helper.make_node("BitShift", ["W_words", "shifts"], ["W_shifted"], direction="RIGHT"),
        helper.make_node("BitwiseAnd", ["W_shifted", "one_bit"], ["W_bits"]),
        helper.make_node("Cast", ["W_bits"], ["W_bits_float"], to=TensorProto.FLOAT),
        _constant("two", value=numpy_helper.from_array(np.array(2.0, np.float32))),
        helper.make_node("Mul", ["two", "W_bits_float"], ["W_twice"]),
        helper.make_node("Sub", ["one", "W_twice"], ["W_signs"]),
        _constant("flat_shape", value_ints=flat_shape),
        helper.make_node("Reshape", ["W_signs", "flat_shape"], ["W_flat"]),
        _constant("cut_start", value_ints=[0]),
        _constant("cut_axis", value_ints=[cut_axis]),
        helper.make_node("Slice", ["W_flat", "cut_start", count, "cut_axis"], ["W_cut"]),
    ]


def _scale_and_bias_nodes(y: str, scale: str, bias: str) -> list[onnx.NodeProto]:
    return [
        helper.make_node("Mul", [scale, y], ["Y_scaled"]),
        helper.make_node("Add", ["Y_scaled", bias], ["Y"]),
    ]


def binary_conv2d_function(opset: int) -> onnx.FunctionProto:
    """`bitfx.BinaryConv2d(X, W, scale, bias)` in standard ops of `opset` (≥ 18)."""
    nodes = _binarized_input_nodes()
    nodes += [
        _constant_ref("pads", "value_ints", "pads"),
        _constant("two_zeros", value_ints=[0, 0]),
        _constant("head", value_ints=[0]),
        _constant("middle", value_ints=[2]),
        _constant("tail", value_ints=[4]),
        helper.make_node("Slice", ["pads", "head", "middle"], ["pads_begin"]),
        helper.make_node("Slice", ["pads", "middle", "tail"], ["pads_end"]),
        helper.make_node("Concat", ["two_zeros", "pads_begin", "two_zeros", "pads_end"], ["pads_nchw"], axis=0),
        _constant_ref("pad_value_int", "value_int", "pad_value"),
        helper.make_node("Cast", ["pad_value_int"], ["pad_value"], to=TensorProto.FLOAT),
        helper.make_node("Pad", ["A", "pads_nchw", "pad_value"], ["A_padded"], mode="constant"),
        _constant_ref("in_channels", "value_int", "in_channels"),
        _constant_ref("group", "value_int", "group"),
        helper.make_node("Div", ["in_channels", "group"], ["group_channels"]),
        helper.make_node("Unsqueeze", ["group_channels", "head"], ["group_channels_1d"]),
    ]
    nodes += _unpack_nodes(cut_axis=3, count="group_channels_1d")
    conv = helper.make_node("Conv", ["A_padded", "W_oihw"], ["Y_raw"])
    for name, kind in (
        ("kernel_shape", AttributeProto.INTS),
        ("strides", AttributeProto.INTS),
        ("dilations", AttributeProto.INTS),
        ("group", AttributeProto.INT),
    ):
        conv.attribute.append(_ref(name, name, kind))
    nodes += [
        helper.make_node("Transpose", ["W_cut"], ["W_oihw"], perm=[0, 3, 1, 2]),
        conv,
        _constant("channel_axes", value_ints=[1, 2]),
        helper.make_node("Unsqueeze", ["scale", "channel_axes"], ["scale_c11"]),
        helper.make_node("Unsqueeze", ["bias", "channel_axes"], ["bias_c11"]),
    ]
    nodes += _scale_and_bias_nodes("Y_raw", "scale_c11", "bias_c11")
    return helper.make_function(
        DOMAIN,
        BINARY_CONV2D,
        ["X", "W", "scale", "bias"],
        ["Y"],
        nodes,
        [helper.make_opsetid("", opset)],
        list(CONV_ATTRIBUTES),
    )


def binary_gemm_function(opset: int) -> onnx.FunctionProto:
    """`bitfx.BinaryGemm(X, W, scale, bias)` in standard ops of `opset` (≥ 18)."""
    nodes = _binarized_input_nodes()
    nodes += [_constant_ref("in_features", "value_int", "in_features"), _constant("head", value_ints=[0])]
    nodes.append(helper.make_node("Unsqueeze", ["in_features", "head"], ["in_features_1d"]))
    nodes += _unpack_nodes(cut_axis=1, count="in_features_1d")
    nodes.append(helper.make_node("Gemm", ["A", "W_cut"], ["Y_raw"], transB=1))
    nodes += _scale_and_bias_nodes("Y_raw", "scale", "bias")
    return helper.make_function(
        DOMAIN,
        BINARY_GEMM,
        ["X", "W", "scale", "bias"],
        ["Y"],
        nodes,
        [helper.make_opsetid("", opset)],
        list(GEMM_ATTRIBUTES),
    )


FUNCTIONS = {BINARY_CONV2D: binary_conv2d_function, BINARY_GEMM: binary_gemm_function}
