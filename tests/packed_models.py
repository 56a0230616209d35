"""Small ONNX models with `bitfx` binary ops, built with onnx.helper for the packed-runtime tests.

`NetBuilder.build()` returns two models from one description: the `bitfx` one (what a `custom`
lowering writes; the executor runs it) and a twin in which every binary op is expanded into
standard ops (sign as Where, ±1 float weights, Conv/MatMul, Mul, Add), which onnxruntime runs.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from bitfx.backends.packed import reference

BITFX = "bitfx"


class NetBuilder:
    def __init__(self, input_shape: tuple[int, ...], seed: int = 0, opset: int = 17) -> None:
        self.input_shape, self.opset = input_shape, opset
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.expanded: list[onnx.NodeProto] = []
        self.initializers: dict[str, np.ndarray] = {}
        self.count = 0

    def _name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def const(self, value: np.ndarray, prefix: str = "c") -> str:
        name = self._name(prefix)
        self.initializers[name] = np.asarray(value)
        return name

    def op(self, op_type: str, inputs: list[str], **attributes: object) -> str:
        """A standard op, the same in both models."""
        output = self._name(op_type.lower())
        node = helper.make_node(op_type, inputs, [output], name=output, **attributes)
        self.nodes.append(node)
        self.expanded.append(node)
        return output

    def _expand(self, op_type: str, inputs: list[str], **attributes: object) -> str:
        output = self._name("x_" + op_type.lower())
        self.expanded.append(helper.make_node(op_type, inputs, [output], name=output, **attributes))
        return output

    def _sign(self, x: str) -> str:
        negative = self._expand("Less", [x, self.const(np.float32(0))])
        return self._expand("Where", [negative, self.const(np.float32(-1)), self.const(np.float32(1))])

    def _scale_bias(
        self, out_channels: int, scale: np.ndarray | None, bias: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        if scale is None:
            scale = self.rng.uniform(0.5, 1.5, out_channels) * self.rng.choice([-1, 1], out_channels)
        if bias is None:
            bias = self.rng.normal(0, 2, out_channels)
        return np.asarray(scale, np.float32), np.asarray(bias, np.float32)

    def binary_conv(
        self,
        x: str,
        in_channels: int,
        out_channels: int,
        kernel: int = 3,
        *,
        stride: int = 1,
        pads: tuple[int, int, int, int] | None = None,
        dilation: int = 1,
        group: int = 1,
        pad_value: int = 0,
        binarize_input: int = 1,
        scale: np.ndarray | None = None,
        bias: np.ndarray | None = None,
    ) -> str:
        pads = (kernel // 2,) * 4 if pads is None else pads
        weight = self.rng.normal(size=(out_channels, in_channels // group, kernel, kernel)).astype(np.float32)
        scale, bias = self._scale_bias(out_channels, scale, bias)
        words = reference.pack_conv_weights(weight)
        output = self._name("bconv")
        attributes = dict(
            kernel_shape=[kernel, kernel],
            strides=[stride, stride],
            pads=list(pads),
            dilations=[dilation, dilation],
            group=group,
            in_channels=in_channels,
            pad_value=pad_value,
            binarize_input=binarize_input,
        )
        inputs = [x, self.const(words, "w"), self.const(scale, "scale"), self.const(bias, "bias")]
        self.nodes.append(helper.make_node("BinaryConv2d", inputs, [output], name=output, domain=BITFX, **attributes))
        a = self._sign(x) if binarize_input else x
        conv_pads = list(pads)
        if pad_value != 0:
            a = self._expand(
                "Pad",
                [
                    a,
                    self.const(np.array([0, 0, pads[0], pads[1], 0, 0, pads[2], pads[3]], np.int64)),
                    self.const(np.float32(pad_value)),
                ],
            )
            conv_pads = [0, 0, 0, 0]
        signs = reference.sign(weight)
        y = self._expand(
            "Conv",
            [a, self.const(signs)],
            strides=[stride, stride],
            pads=conv_pads,
            dilations=[dilation, dilation],
            group=group,
        )
        y = self._expand("Mul", [y, self.const(scale.reshape(1, -1, 1, 1))])
        self.expanded.append(helper.make_node("Add", [y, self.const(bias.reshape(1, -1, 1, 1))], [output], name=output))
        return output

    def binary_gemm(
        self,
        x: str,
        in_features: int,
        out_features: int,
        *,
        binarize_input: int = 1,
        scale: np.ndarray | None = None,
        bias: np.ndarray | None = None,
    ) -> str:
        weight = self.rng.normal(size=(out_features, in_features)).astype(np.float32)
        scale, bias = self._scale_bias(out_features, scale, bias)
        output = self._name("bgemm")
        inputs = [
            x,
            self.const(reference.pack_signs(reference.sign(weight)), "w"),
            self.const(scale, "scale"),
            self.const(bias, "bias"),
        ]
        self.nodes.append(
            helper.make_node(
                "BinaryGemm",
                inputs,
                [output],
                name=output,
                domain=BITFX,
                in_features=in_features,
                binarize_input=binarize_input,
            )
        )
        a = self._sign(x) if binarize_input else x
        y = self._expand("MatMul", [a, self.const(np.ascontiguousarray(reference.sign(weight).T))])
        y = self._expand("Mul", [y, self.const(scale)])
        self.expanded.append(helper.make_node("Add", [y, self.const(bias)], [output], name=output))
        return output

    def conv(
        self, x: str, in_channels: int, out_channels: int, kernel: int, *, stride: int = 1, pad: int = 0, group: int = 1
    ) -> str:
        weight = self.rng.normal(
            0, 1 / np.sqrt(in_channels // group * kernel * kernel), (out_channels, in_channels // group, kernel, kernel)
        )
        bias = self.rng.normal(0, 0.1, out_channels)
        return self.op(
            "Conv",
            [x, self.const(weight.astype(np.float32)), self.const(bias.astype(np.float32))],
            kernel_shape=[kernel, kernel],
            strides=[stride, stride],
            pads=[pad] * 4,
            group=group,
        )

    def affine(self, x: str, channels: int, *, negative: bool = True) -> str:
        """A per-channel y = a·x + b (a folded BatchNorm), negative a on some channels when `negative`."""
        a = self.rng.uniform(0.5, 2, channels) * (self.rng.choice([-1, 1], channels) if negative else 1)
        y = self.op("Mul", [x, self.const(a.astype(np.float32).reshape(1, -1, 1, 1))])
        return self.op("Add", [y, self.const(self.rng.normal(0, 1, (1, channels, 1, 1)).astype(np.float32))])

    def build(self, outputs: list[str]) -> tuple[onnx.ModelProto, onnx.ModelProto]:
        def model(nodes: list[onnx.NodeProto], domains: list[tuple[str, int]]) -> onnx.ModelProto:
            graph = helper.make_graph(
                nodes,
                "packed_test",
                [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *self.input_shape[1:]])],
                [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs],
                [
                    numpy_helper.from_array(value, name)
                    for name, value in self.initializers.items()
                    if name in {i for n in nodes for i in n.input}
                ],
            )
            return helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in domains])

        return model(self.nodes, [("", self.opset), (BITFX, 1)]), model(self.expanded, [("", self.opset)])

    def input(self, batch: int | None = None, seed: int = 1) -> np.ndarray:
        shape = (batch or self.input_shape[0], *self.input_shape[1:])
        return np.random.default_rng(seed).normal(size=shape).astype(np.float32)
