"""Model-local ONNX functions for `bitfx.BinaryConv2d` and `bitfx.BinaryGemm` in standard ops.

With these in `model.functions`, stock onnxruntime runs a `custom` file unchanged (it inlines
the body); a runtime with its own kernel for the op name (the packed runtime) uses that
instead. The bodies follow docs/binary-format.md literally:

    A = binarize_input ? Where(X < 0, −1, +1) : X
    A = Pad(A, [0, 0, top, left, 0, 0, bottom, right], pad_value)
    W = 1 − 2·((W_packed >> [0..63]) & 1), flattened per (c_out, kh, kw), cut to in_channels/group, to OIHW
    Y = Mul(scale, Conv(A, W)) + bias          (scale first: see `binary_float`)

Attributes reach the body through attribute references (`Constant<value_int = @pad_value>`).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto, helper, numpy_helper

DOMAIN = "bitfx"
DOMAIN_VERSION = 1
CONV_ATTRIBUTES = ("kernel_shape", "strides", "pads", "dilations", "group", "in_channels", "pad_value", "binarize_input")
GEMM_ATTRIBUTES = ("in_features", "binarize_input")


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
    for name, kind in (("kernel_shape", AttributeProto.INTS), ("strides", AttributeProto.INTS), ("dilations", AttributeProto.INTS), ("group", AttributeProto.INT)):
        conv.attribute.append(_ref(name, name, kind))
    nodes += [
        helper.make_node("Transpose", ["W_cut"], ["W_oihw"], perm=[0, 3, 1, 2]),
        conv,
        _constant("channel_axes", value_ints=[1, 2]),
        helper.make_node("Unsqueeze", ["scale", "channel_axes"], ["scale_c11"]),
        helper.make_node("Unsqueeze", ["bias", "channel_axes"], ["bias_c11"]),
    ]
    nodes += _scale_and_bias_nodes("Y_raw", "scale_c11", "bias_c11")
    return helper.make_function(DOMAIN, "BinaryConv2d", ["X", "W", "scale", "bias"], ["Y"], nodes, [helper.make_opsetid("", opset)], list(CONV_ATTRIBUTES))


def binary_gemm_function(opset: int) -> onnx.FunctionProto:
    """`bitfx.BinaryGemm(X, W, scale, bias)` in standard ops of `opset` (≥ 18)."""
    nodes = _binarized_input_nodes()
    nodes += [_constant_ref("in_features", "value_int", "in_features"), _constant("head", value_ints=[0])]
    nodes.append(helper.make_node("Unsqueeze", ["in_features", "head"], ["in_features_1d"]))
    nodes += _unpack_nodes(cut_axis=1, count="in_features_1d")
    nodes.append(helper.make_node("Gemm", ["A", "W_cut"], ["Y_raw"], transB=1))
    nodes += _scale_and_bias_nodes("Y_raw", "scale", "bias")
    return helper.make_function(DOMAIN, "BinaryGemm", ["X", "W", "scale", "bias"], ["Y"], nodes, [helper.make_opsetid("", opset)], list(GEMM_ATTRIBUTES))


FUNCTIONS = {"BinaryConv2d": binary_conv2d_function, "BinaryGemm": binary_gemm_function}
