"""The executor's steps that run the prepared kernels of `kernels.py` (never the C library
directly): float Conv, Gemm and MaxPool, the global average pool, packing, the `bitfx` binary ops
(float or packed output) and max pooling on packed data; and the functions that build a step's
kernel from an ONNX node."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from bitfx.backends.packed.errors import PackedModelError
from bitfx.backends.packed.graph import Graph, Node
from bitfx.backends.packed.int8_conv import Int8Conv
from bitfx.backends.packed.kernels import (
    NO_CLAMP,
    BinaryConv,
    FloatConv,
    FloatGemm,
    MaxPool,
    PackedTensor,
    Window,
    bind_binary_maxpool,
    bind_float_maxpool,
    bind_global_avgpool,
    bind_pack,
    empty_channels_last,
    is_channels_last,
)
from bitfx.backends.packed.numpy_ops import NUMPY_OPS
from bitfx.backends.packed.program import Epilogue, PackedLayout
from bitfx.backends.packed.steps import NumpyStep, Step, Value, kernel_call
from bitfx.format import BINARY_GEMM, unpack_signs


def window_of(node: Node, input_shape: Sequence[int], kernel: Sequence[int]) -> Window:
    """The 2-D window of a Conv/MaxPool/bitfx node, resolving `auto_pad` for this input shape."""
    strides = tuple(node.attr("strides") or (1, 1))
    dilations = tuple(node.attr("dilations") or (1, 1))
    auto_pad = node.attr("auto_pad", "NOTSET")
    if auto_pad in ("NOTSET", "VALID"):
        pads = tuple(node.attr("pads") or (0, 0, 0, 0)) if auto_pad == "NOTSET" else (0, 0, 0, 0)
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for size, k, s, d in zip(input_shape[2:], kernel, strides, dilations):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            small = total // 2
            begin.append(small if auto_pad == "SAME_UPPER" else total - small)
            end.append(total - begin[-1])
        pads = (*begin, *end)
    else:
        raise PackedModelError(f"{node.describe()}: auto_pad={auto_pad!r} is not supported")
    return Window(tuple(kernel), strides, pads, dilations)


def _residual_call(residual: np.ndarray | None, out: np.ndarray) -> tuple[np.ndarray | None, Callable[[], None] | None]:
    """The residual as the kernel reads it, in the layout of its output `out` (NCHW or channels-last):
    the value itself, or a (broadcast, converted) copy refreshed each run."""
    if residual is None or (residual.shape == out.shape and _is_float32(residual, channels_last=is_channels_last(out))):
        return residual, None
    scratch = empty_channels_last(out.shape) if is_channels_last(out) else np.empty(out.shape, np.float32)
    return scratch, lambda: np.copyto(scratch, residual)


def _is_float32(x: np.ndarray, *, channels_last: bool = False) -> bool:
    """Whether `x` is float32 with C-contiguous (NCHW) memory, or channels-last memory when `channels_last`."""
    return x.dtype == np.float32 and (is_channels_last(x) if channels_last else x.flags.c_contiguous)


def _float32_call(x: np.ndarray, *, channels_last: bool = False) -> tuple[np.ndarray, Callable[[], None] | None]:
    """`x` as a kernel reads it (C-contiguous float32, or also channels-last for a kernel that reads both
    layouts): the value itself, or a converted copy refreshed on every run (a copy made once would hold
    the first run's values)."""
    if _is_float32(x) or (channels_last and _is_float32(x, channels_last=True)):
        return x, None
    scratch = np.empty(x.shape, np.float32)
    return scratch, lambda: np.copyto(scratch, x)


def _bound(refreshes: Sequence[Callable[[], None] | None], call: Callable[[], None]) -> Callable[[], None]:
    """The kernel call preceded by the refreshes of its converted inputs."""
    return kernel_call(*[r for r in refreshes if r is not None], call)


class FloatConvStep(Step):
    """ONNX Conv (and bitfx ops with binarize_input=0) on the float kernel, with fused epilogue; with
    `pool` (a MaxPool node reading the epilogue's result) the step's output is that pool's, fused, and
    may be kept channels-last (`channels_last`, set by the compiler)."""

    channels_last = False

    def __init__(
        self,
        name: str,
        x: str,
        output: str,
        make: Callable[[Window], FloatConv],
        node: Node,
        kernel: Sequence[int],
        epilogue: Epilogue,
        pool: Node | None = None,
    ) -> None:
        super().__init__(name, [x] + ([epilogue.residual] if epilogue.residual else []), [output])
        self.make, self.node, self.kernel, self.epilogue, self.pool = make, node, tuple(kernel), epilogue, pool
        self._convs: dict[tuple, FloatConv] = {}

    def conv(self, shape: tuple) -> FloatConv | Int8Conv:
        if len(shape) != 4:
            raise PackedModelError(
                f"{self.name}: only 2-D convolution (4-D NCHW input) is supported, got input shape {shape}"
            )
        window = window_of(self.node, shape, self.kernel)
        if window not in self._convs:
            self._convs[window] = self.make(window)
        conv = self._convs[window]
        if shape[1] != conv.in_channels:
            raise PackedModelError(
                f"{self.name}: the input has {shape[1]} channels; W (with group={conv.group}) needs {conv.in_channels}"
            )
        return conv

    def max_pool(self, conv_shape: tuple) -> MaxPool | None:
        """The fused pool for a convolution output of `conv_shape`, or None."""
        if self.pool is None:
            return None
        window = window_of(self.pool, conv_shape, self.pool.attr("kernel_shape"))
        return MaxPool(window, bool(self.pool.attr("ceil_mode", 0)))

    def eager(self, inputs: Sequence[Value]) -> list[Value]:
        x = inputs[0]
        conv = self.conv(x.shape)
        size = conv.out_size(*x.shape[2:])
        pool = self.max_pool((x.shape[0], conv.out_channels, *size))
        shape = (x.shape[0], conv.out_channels, *(pool.out_size(*size) if pool else size))
        out = empty_channels_last(shape) if self.channels_last else np.empty(shape, np.float32)
        self.bind(inputs, [out])()
        return [out]

    def bind(self, inputs: Sequence[Value], outputs: Sequence[Value]) -> Callable[[], None]:
        x, out = inputs[0], outputs[0]
        residual, refresh = _residual_call(inputs[1] if len(inputs) > 1 else None, out)
        x, convert = _float32_call(x)
        conv = self.conv(x.shape)
        pool = self.max_pool((x.shape[0], conv.out_channels, *conv.out_size(*x.shape[2:])))
        call = conv.bind(x, out, residual=residual, clamp=self.epilogue.clamp, pool=pool)
        return _bound((convert, refresh), call)


class FloatMaxPoolStep(Step):
    """ONNX MaxPool (2-D, NCHW) on the compiled kernel."""

    def __init__(self, node: Node) -> None:
        super().__init__(node.describe(), node.inputs[:1], node.outputs[:1])
        if len([o for o in node.outputs if o]) > 1:
            raise PackedModelError(f"{node.describe()}: the Indices output of MaxPool is not supported")
        if len(node.attr("kernel_shape")) != 2:
            raise PackedModelError(f"{node.describe()}: only 2-D MaxPool is supported")
        self.node, self.ceil_mode = node, bool(node.attr("ceil_mode", 0))

    def eager(self, inputs: Sequence[Value]) -> list[Value]:
        x = inputs[0]
        window = window_of(self.node, x.shape, self.node.attr("kernel_shape"))
        out = np.empty((*x.shape[:2], *window.out_size(*x.shape[2:], self.ceil_mode)), np.float32)
        self.bind(inputs, [out])()
        return [out]

    def bind(self, inputs: Sequence[Value], outputs: Sequence[Value]) -> Callable[[], None]:
        x, convert = _float32_call(inputs[0])
        window = window_of(self.node, x.shape, self.node.attr("kernel_shape"))
        return _bound((convert,), bind_float_maxpool(x, outputs[0], window, self.ceil_mode))


class FloatGemmStep(Step):
    """ONNX Gemm with constant weights (and bias) on the compiled kernel."""

    def __init__(self, node: Node, gemm: FloatGemm) -> None:
        super().__init__(node.describe(), node.inputs[:1], node.outputs[:1])
        self.gemm = gemm

    def eager(self, inputs: Sequence[Value]) -> list[Value]:
        return [self.gemm(inputs[0])]

    def bind(self, inputs: Sequence[Value], outputs: Sequence[Value]) -> Callable[[], None]:
        x, convert = _float32_call(inputs[0])
        return _bound((convert,), self.gemm.bind(x, outputs[0]))


class GlobalAvgPoolStep(Step):
    """ONNX GlobalAveragePool, or ReduceMean over the last two axes of a 4-D input, on the compiled
    kernel (NCHW or channels-last input; the sum in double, rounded once). An input the kernel does not
    take (another dtype, ReduceMean on a rank other than 4, no pixels) runs the op's numpy step."""

    def __init__(self, node: Node, fallback: NumpyStep, *, keepdims: bool, rank: int | None) -> None:
        super().__init__(node.describe(), node.inputs[:1], node.outputs[:1])
        self.fallback, self.keepdims, self.rank = fallback, keepdims, rank

    def native(self, x: np.ndarray) -> bool:
        """Whether the kernel computes this op on `x` (else numpy does)."""
        rank_fits = x.ndim >= 3 if self.rank is None else x.ndim == self.rank
        return x.dtype == np.float32 and rank_fits and math.prod(x.shape[2:]) > 0

    def eager(self, inputs: Sequence[Value]) -> list[Value]:
        x = inputs[0]
        if not self.native(x):
            return self.fallback.eager(inputs)
        out = np.empty(x.shape[:2] + (1,) * (x.ndim - 2) * self.keepdims, np.float32)
        self.bind(inputs, [out])()
        return [out]

    def bind(self, inputs: Sequence[Value], outputs: Sequence[Value]) -> Callable[[], None]:
        if not self.native(inputs[0]):
            return self.fallback.bind(inputs, outputs)
        x, convert = _float32_call(inputs[0], channels_last=True)
        return _bound((convert,), bind_global_avgpool(x, outputs[0]))


_LAST_TWO_AXES = ({2, 3}, {-2, -1}, {2, -1}, {-2, 3})  # of a 4-D input


def global_avgpool_step(node: Node, graph: Graph) -> GlobalAvgPoolStep | None:
    """The kernel step for a GlobalAveragePool, or a ReduceMean whose (constant) axes are the last two of a
    4-D input; None for any other node (a ReduceMean over other axes stays a numpy step)."""
    if node.qualified == "GlobalAveragePool":
        return GlobalAvgPoolStep(node, NUMPY_OPS[node.op_type](node, graph), keepdims=True, rank=None)
    if node.qualified != "ReduceMean":
        return None
    axes = node.attributes.get("axes")
    if axes is None and len(node.inputs) > 1 and node.inputs[1]:
        constant = graph.constant(node.inputs[1])
        axes = None if constant is None or constant.ndim != 1 else constant.tolist()
    if not isinstance(axes, list) or len(axes) != 2 or not all(isinstance(a, int) for a in axes):
        return None
    if set(axes) not in _LAST_TWO_AXES:
        return None
    keepdims = bool(node.attr("keepdims", 1))
    return GlobalAvgPoolStep(node, NUMPY_OPS[node.op_type](node, graph), keepdims=keepdims, rank=4)


def float_gemm(node: Node, graph: Graph) -> FloatGemm | None:
    """The compiled kernel for a Gemm with constant float weights (transA=0, a per-channel or absent C), else None."""
    weights = graph.constant(node.inputs[1])
    bias = graph.constant(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else None
    if (
        weights is None
        or weights.dtype != np.float32
        or node.attr("transA", 0)
        or (len(node.inputs) > 2 and node.inputs[2] and bias is None)
    ):
        return None
    channels = weights.shape[0] if node.attr("transB", 0) else weights.shape[1]
    if bias is not None and (
        bias.size not in (1, channels) or bias.ndim > 2 or (bias.ndim == 2 and bias.shape[0] != 1)
    ):
        return None
    return FloatGemm(
        weights,
        bias,
        alpha=node.attr("alpha", 1.0),
        beta=node.attr("beta", 1.0),
        transposed=bool(node.attr("transB", 0)),
    )


class PackStep(Step):
    """sign() of a float value (NCHW or channels-last memory) into a packed tensor with the layout its
    binary readers need."""

    def __init__(self, name: str, x: str, output: str, layout: PackedLayout) -> None:
        super().__init__(name, [x], [output])
        self.layout = layout

    @staticmethod
    def _as_nchw(x: np.ndarray) -> np.ndarray:
        return x.reshape(*x.shape, 1, 1) if x.ndim == 2 else x

    def eager(self, inputs: Sequence[Value]) -> list[Value]:
        x = self._as_nchw(inputs[0])
        if x.ndim != 4:
            raise PackedModelError(
                f"{self.name}: a binary op's input must be N×C×H×W (conv) or N×K (gemm), got shape {inputs[0].shape}"
            )
        out = PackedTensor.empty(
            x.shape[0],
            x.shape[1],
            x.shape[2],
            x.shape[3],
            groups=self.layout.groups,
            border=self.layout.border,
            pad=self.layout.pad,
        )
        self.bind(inputs, [out])()
        return [out]

    def bind(self, inputs: Sequence[Value], outputs: Sequence[Value]) -> Callable[[], None]:
        x, convert = _float32_call(inputs[0], channels_last=True)
        return _bound((convert,), bind_pack(self._as_nchw(x), outputs[0]))


class BinaryConvStep(Step):
    """`bitfx.BinaryConv2d` / `bitfx.BinaryGemm` (binarize_input=1) on a packed input: float output
    with the fused epilogue (a conv's kept channels-last when the compiler sets `channels_last`), or
    packed output (thresholds) in `packed_out` layout."""

    channels_last = False

    def __init__(
        self,
        name: str,
        x: str,
        output: str,
        conv: BinaryConv,
        *,
        gemm: bool,
        epilogue: Epilogue,
        packed_out: PackedLayout | None = None,
    ) -> None:
        super().__init__(name, [x] + ([epilogue.residual] if epilogue.residual else []), [output])
        self.conv, self.gemm, self.epilogue, self.packed_out = conv, gemm, epilogue, packed_out

    def eager(self, inputs: Sequence[Value]) -> list[Value]:
        x: PackedTensor = inputs[0]
        out_h, out_w = self.conv.out_size(x.height, x.width)
        if self.packed_out is not None:
            layout = self.packed_out
            out = PackedTensor.empty(
                x.batch, self.conv.out_channels, out_h, out_w, border=layout.border, pad=layout.pad
            )
        else:
            shape = (x.batch, self.conv.out_channels) if self.gemm else (x.batch, self.conv.out_channels, out_h, out_w)
            out = empty_channels_last(shape) if self.channels_last else np.empty(shape, np.float32)
        self.bind(inputs, [out])()
        return [out]

    def bind(self, inputs: Sequence[Value], outputs: Sequence[Value]) -> Callable[[], None]:
        x, out = inputs[0], outputs[0]
        if isinstance(out, PackedTensor):
            return self.conv.bind(x, out)
        target = out.reshape(*out.shape, 1, 1) if self.gemm else out
        residual, refresh = _residual_call(inputs[1] if len(inputs) > 1 else None, out)
        if residual is not None and self.gemm:
            residual = residual.reshape(target.shape)
        call = self.conv.bind(x, target, residual=residual, clamp=self.epilogue.clamp)
        return kernel_call(refresh, call) if refresh else call


class BinaryMaxPoolStep(Step):
    """MaxPool between binary layers, on packed data (AND of bits)."""

    def __init__(self, node: Node, x: str, output: str, layout: PackedLayout) -> None:
        super().__init__(node.describe(), [x], [output])
        self.node, self.layout, self.ceil_mode = node, layout, bool(node.attr("ceil_mode", 0))

    def window(self, x: PackedTensor) -> Window:
        return window_of(self.node, (x.batch, x.channels, x.height, x.width), self.node.attr("kernel_shape"))

    def eager(self, inputs: Sequence[Value]) -> list[Value]:
        x: PackedTensor = inputs[0]
        out_h, out_w = self.window(x).out_size(x.height, x.width, self.ceil_mode)
        out = PackedTensor.empty(
            x.batch, x.channels, out_h, out_w, groups=x.groups, border=self.layout.border, pad=self.layout.pad
        )
        self.bind(inputs, [out])()
        return [out]

    def bind(self, inputs: Sequence[Value], outputs: Sequence[Value]) -> Callable[[], None]:
        return bind_binary_maxpool(inputs[0], outputs[0], self.window(inputs[0]), self.ceil_mode)


class BinaryGemmFloatStep(Step):
    """`bitfx.BinaryGemm` with binarize_input=0 (W1A32): float input times ±1 weights, in numpy."""

    def __init__(
        self, node: Node, weights: np.ndarray, scale: np.ndarray, bias: np.ndarray, epilogue: Epilogue, output: str
    ) -> None:
        super().__init__(
            node.describe(), [node.inputs[0]] + ([epilogue.residual] if epilogue.residual else []), [output]
        )
        self.signs_t = np.ascontiguousarray(unpack_signs(weights, node.attr("in_features")).T)
        self.scale, self.bias, self.epilogue = scale, bias, epilogue

    def _compute(self, inputs: Sequence[Value], out: np.ndarray | None) -> np.ndarray:
        y = np.matmul(inputs[0], self.signs_t, out=out)
        y *= self.scale
        y += self.bias
        if len(inputs) > 1:
            y += inputs[1]
        low, high = self.epilogue.clamp
        if (low, high) != NO_CLAMP:
            np.clip(y, low, high, out=y)
        return y

    def eager(self, inputs: Sequence[Value]) -> list[Value]:
        return [self._compute(inputs, None)]

    def bind(self, inputs: Sequence[Value], outputs: Sequence[Value]) -> Callable[[], None]:
        return lambda: self._compute(inputs, outputs[0])


def conv_factory(
    node: Node, graph: Graph, int8_range: tuple[float, float] | None = None
) -> tuple[Callable[[Window], FloatConv | Int8Conv], tuple[int, int]]:
    """For an ONNX Conv: a FloatConv maker per window (an Int8Conv maker with `int8_range`, the
    quantization range of its input), and the kernel size."""
    weights = graph.constant(node.inputs[1])
    if weights is None:
        raise PackedModelError(f"{node.describe()}: the weights must be a constant (an initializer)")
    if weights.ndim != 4:
        raise PackedModelError(
            f"{node.describe()}: only 2-D convolution is supported, got weights of shape {weights.shape}"
        )
    bias = graph.constant(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else None
    if len(node.inputs) > 2 and node.inputs[2] and bias is None:
        raise PackedModelError(f"{node.describe()}: the bias must be a constant (an initializer)")
    group = node.attr("group", 1)
    kernel = tuple(node.attr("kernel_shape") or weights.shape[2:])
    if int8_range is not None:
        return (lambda window: Int8Conv(weights, bias, window=window, input_range=int8_range)), kernel
    return (lambda window: FloatConv(weights, bias, window=window, group=group)), kernel


def binary_constants(node: Node, graph: Graph) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(W, scale, bias) of a bitfx node, which must all be constants."""
    values = []
    for index, what in enumerate(("W", "scale", "bias"), start=1):
        value = graph.constant(node.inputs[index]) if len(node.inputs) > index else None
        if value is None:
            raise PackedModelError(f"{node.describe()}: input {what} must be a constant (an initializer)")
        values.append(value)
    weights, scale, bias = values
    if weights.dtype != np.uint64:
        raise PackedModelError(
            f"{node.describe()}: W must be packed uint64 words (docs/binary-format.md), got {weights.dtype}"
        )
    return weights, scale.astype(np.float32), bias.astype(np.float32)


def binary_conv_kernel(node: Node, graph: Graph) -> BinaryConv:
    """The prepared kernel of a `bitfx.BinaryConv2d` or `bitfx.BinaryGemm` node (a gemm is a 1×1 conv)."""
    weights, scale, bias = binary_constants(node, graph)
    if node.op_type == BINARY_GEMM:
        if weights.ndim != 2:
            raise PackedModelError(f"{node.describe()}: W must be C_out × words, got shape {weights.shape}")
        return BinaryConv(
            weights.reshape(weights.shape[0], 1, 1, -1),
            scale,
            bias,
            window=Window((1, 1)),
            group=1,
            in_channels=node.attr("in_features"),
            pad_value=1,
        )
    pads = tuple(node.attr("pads", (0, 0, 0, 0)))
    window = Window(
        tuple(node.attr("kernel_shape")),
        tuple(node.attr("strides", (1, 1))),
        pads,
        tuple(node.attr("dilations", (1, 1))),
    )
    try:
        return BinaryConv(
            weights,
            scale,
            bias,
            window=window,
            group=node.attr("group", 1),
            in_channels=node.attr("in_channels"),
            pad_value=node.attr("pad_value", 0),
        )
    except Exception as error:
        raise PackedModelError(f"{node.describe()}: {error}") from error


def binary_float_conv(node: Node, graph: Graph) -> tuple[Callable[[Window], FloatConv], tuple[int, int]]:
    """A `bitfx.BinaryConv2d` with binarize_input=0 as a float convolution with ±1 weights."""
    weights, scale, bias = binary_constants(node, graph)
    group, in_channels = node.attr("group", 1), node.attr("in_channels")
    signs = unpack_signs(weights, in_channels // group).transpose(0, 3, 1, 2)
    pad_value = float(node.attr("pad_value", 0))
    return (lambda window: FloatConv(signs, bias, scale, window=window, group=group, pad_value=pad_value)), tuple(
        node.attr("kernel_shape")
    )
