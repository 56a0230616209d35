"""Standard ONNX ops computed with numpy (everything except convolution and max pooling, which
run on the compiled kernels, see kernel_steps.py). Each entry of `NUMPY_OPS` turns a node into a
`NumpyStep`; `ELEMENTWISE` lists the ops that act on each element independently (what the
executor may fold into a binary layer's output thresholds)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from onnx import helper

from bitfx.backends.packed.errors import PackedModelError
from bitfx.backends.packed.graph import Graph, Node
from bitfx.backends.packed.kernels import Window
from bitfx.backends.packed.resize import output_shape, resize
from bitfx.backends.packed.steps import NumpyStep

Arrays = Sequence[np.ndarray]
Factory = Callable[[Node, Graph], NumpyStep]
NUMPY_OPS: dict[str, Factory] = {}
ELEMENTWISE: set[str] = set()
# Elementwise ops that never decrease when the input at a given position increases, the other
# inputs being constants (see `non_decreasing`).
_MONOTONE: dict[str, Callable[[Node, Graph, int], bool]] = {}


def _register(*op_types: str, elementwise: bool = False) -> Callable[[Factory], Factory]:
    def register(factory: Factory) -> Factory:
        for op_type in op_types:
            NUMPY_OPS[op_type] = factory
            if elementwise:
                ELEMENTWISE.add(op_type)
        return factory

    return register


def non_decreasing(node: Node, graph: Graph, position: int) -> bool:
    """Whether the elementwise `node` never decreases when its input at `position` increases
    (its other inputs being constants): then sign(node(max(...))) = max(sign(node(...)))."""
    check = _MONOTONE.get(node.op_type)
    return bool(check and check(node, graph, position))


def _into(results: Sequence[np.ndarray], outs: Arrays | None) -> Sequence[np.ndarray]:
    if outs is None:
        return results
    for out, result in zip(outs, results):
        np.copyto(out, result)
    return outs


def _step(
    node: Node, compute: Callable[[Arrays, Arrays | None], Sequence[np.ndarray]], *, is_view: bool = False
) -> NumpyStep:
    return NumpyStep(node.describe(), node.inputs, node.outputs, compute, is_view=is_view)


def _const(node: Node, graph: Graph, index: int, what: str) -> np.ndarray | None:
    """A constant input (None when omitted); an error when it is computed at run time."""
    if index >= len(node.inputs) or not node.inputs[index]:
        return None
    value = graph.constant(node.inputs[index])
    if value is None:
        raise PackedModelError(
            f"{node.describe()}: input {index} ({what}) must be a constant (an initializer), not computed at run time"
        )
    return value


def _ufunc(function: np.ufunc) -> Factory:
    def factory(node: Node, graph: Graph) -> NumpyStep:
        return _step(node, lambda ins, outs: [function(*ins, out=None if outs is None else outs[0])])

    return factory


_UNARY = {
    "Neg": np.negative, "Abs": np.absolute, "Exp": np.exp, "Log": np.log, "Sqrt": np.sqrt, "Reciprocal": np.reciprocal,
    "Floor": np.floor, "Ceil": np.ceil, "Round": np.rint, "Sign": np.sign, "Tanh": np.tanh, "Not": np.logical_not,
    "Sin": np.sin, "Cos": np.cos, "IsNaN": np.isnan,
}  # fmt: skip
_BINARY = {
    "Add": np.add, "Sub": np.subtract, "Mul": np.multiply,
    "And": np.logical_and, "Or": np.logical_or, "Xor": np.logical_xor,
    "Equal": np.equal, "Less": np.less, "Greater": np.greater,
    "LessOrEqual": np.less_equal, "GreaterOrEqual": np.greater_equal,
}  # fmt: skip
for _name, _function in {**_UNARY, **_BINARY}.items():
    _register(_name, elementwise=True)(_ufunc(_function))


def _other_constant(
    check: Callable[[np.ndarray], bool], commutative: bool = False
) -> Callable[[Node, Graph, int], bool]:
    """Monotone in input `position` when the other input is a constant that passes `check`
    (and `position` is 0 unless the op is commutative)."""

    def monotone(node: Node, graph: Graph, position: int) -> bool:
        if len(node.inputs) != 2 or (position != 0 and not commutative):
            return False
        value = graph.constant(node.inputs[1 - position])
        return value is not None and bool(check(value))

    return monotone


def _unary(node: Node, graph: Graph, position: int) -> bool:
    return position == 0


_MONOTONE.update(
    {
        name: _unary
        for name in ("Relu", "Identity", "Dropout", "Sigmoid", "Tanh", "Sign", "Floor", "Ceil", "Round", "Clip")
    },
    Add=_other_constant(lambda c: True, commutative=True),
    Sub=_other_constant(lambda c: True),
    Mul=_other_constant(lambda c: np.all(c >= 0), commutative=True),
    Div=_other_constant(lambda c: np.all(c > 0)),
    PRelu=_other_constant(lambda c: np.all(c >= 0)),
    LeakyRelu=lambda node, graph, position: position == 0 and node.attr("alpha", 0.01) >= 0,
    HardSigmoid=lambda node, graph, position: position == 0 and node.attr("alpha", 0.2) >= 0,
)


@_register("Div", elementwise=True)
def _div(node: Node, graph: Graph) -> NumpyStep:
    def compute(ins: Arrays, outs: Arrays | None) -> Sequence[np.ndarray]:
        a, b = ins
        if np.issubdtype(np.result_type(a, b), np.integer):
            return _into([np.trunc(a / b).astype(np.result_type(a, b))], outs)  # ONNX integer Div truncates
        return [np.divide(a, b, out=None if outs is None else outs[0])]

    return _step(node, compute)


@_register("Pow", elementwise=True)
def _pow(node: Node, graph: Graph) -> NumpyStep:
    return _step(
        node, lambda ins, outs: [np.power(ins[0], ins[1].astype(ins[0].dtype), out=None if outs is None else outs[0])]
    )


@_register("Max", "Min", "Sum", "Mean", elementwise=True)
def _variadic(node: Node, graph: Graph) -> NumpyStep:
    function = {"Max": np.maximum, "Min": np.minimum, "Sum": np.add, "Mean": np.add}[node.op_type]

    def compute(ins: Arrays, outs: Arrays | None) -> Sequence[np.ndarray]:
        result = ins[0]
        for value in ins[1:]:
            result = function(result, value)
        if node.op_type == "Mean":
            result = result / np.asarray(len(ins), result.dtype)
        return _into([np.asarray(result)], outs)

    return _step(node, compute)


@_register("Relu", elementwise=True)
def _relu(node: Node, graph: Graph) -> NumpyStep:
    return _step(
        node, lambda ins, outs: [np.maximum(ins[0], ins[0].dtype.type(0), out=None if outs is None else outs[0])]
    )


@_register("Clip", elementwise=True)
def _clip(node: Node, graph: Graph) -> NumpyStep:
    low, high = clip_bounds(node, graph)

    def compute(ins: Arrays, outs: Arrays | None) -> Sequence[np.ndarray]:
        x = ins[0]
        result = np.maximum(x, x.dtype.type(low), out=None if outs is None else outs[0])
        return [np.minimum(result, x.dtype.type(high), out=result)]

    return _step(node, compute)


def clip_bounds(node: Node, graph: Graph) -> tuple[float, float]:
    """(min, max) of a Clip node (attributes before opset 11, constant inputs after); ±inf when absent."""
    if node.op_type == "Relu":
        return 0.0, math.inf
    low = _const(node, graph, 1, "min")
    high = _const(node, graph, 2, "max")
    low = float(low) if low is not None else float(node.attr("min", -math.inf))
    high = float(high) if high is not None else float(node.attr("max", math.inf))
    return low, high


def _where_negative(scale_of: Callable[[Node, Arrays], object]) -> Factory:
    def factory(node: Node, graph: Graph) -> NumpyStep:
        def compute(ins: Arrays, outs: Arrays | None) -> Sequence[np.ndarray]:
            x = ins[0]
            return _into([np.where(x < 0, (x * scale_of(node, ins)).astype(x.dtype), x)], outs)

        return _step(node, compute)

    return factory


_register("PRelu", elementwise=True)(_where_negative(lambda node, ins: ins[1]))
_register("LeakyRelu", elementwise=True)(_where_negative(lambda node, ins: np.float32(node.attr("alpha", 0.01))))


@_register(
    "Sigmoid", "HardSigmoid", "HardSwish", "Softplus", "Softsign", "Elu", "Selu", "ThresholdedRelu", elementwise=True
)
def _activation(node: Node, graph: Graph) -> NumpyStep:
    op, attr = node.op_type, node.attr

    def compute(ins: Arrays, outs: Arrays | None) -> Sequence[np.ndarray]:
        x = ins[0]
        one = x.dtype.type(1)
        if op == "Sigmoid":
            y = one / (one + np.exp(-x))
        elif op in ("HardSigmoid", "HardSwish"):
            alpha, beta = (attr("alpha", 0.2), attr("beta", 0.5)) if op == "HardSigmoid" else (1 / 6, 0.5)
            y = np.clip(x * x.dtype.type(alpha) + x.dtype.type(beta), 0, 1)
            y = y * x if op == "HardSwish" else y
        elif op == "Softplus":
            y = np.log(one + np.exp(x))
        elif op == "Softsign":
            y = x / (one + np.abs(x))
        elif op in ("Elu", "Selu"):
            alpha = attr("alpha", 1.0 if op == "Elu" else 1.67326319217681884765625)
            gamma = 1.0 if op == "Elu" else attr("gamma", 1.05070102214813232421875)
            y = np.where(x > 0, x, x.dtype.type(alpha) * (np.exp(x) - one)) * x.dtype.type(gamma)
        else:
            y = np.where(x > attr("alpha", 1.0), x, 0)
        return _into([np.asarray(y, x.dtype)], outs)

    return _step(node, compute)


def erf(x: np.ndarray) -> np.ndarray:
    """erf in float64 from a Chebyshev fit of erfc (relative error of erfc below 1.2e-7, so
    1 + erf keeps float32 accuracy in the negative tail too: what GELU needs)."""
    z = np.abs(x.astype(np.float64))
    t = 1.0 / (1.0 + 0.5 * z)
    poly = 0.17087277
    for c in (-0.82215223, 1.48851587, -1.13520398, 0.27886807, -0.18628806, 0.09678418, 0.37409196, 1.00002368):
        poly = c + t * poly
    erfc = t * np.exp(-z * z - 1.26551223 + t * poly)
    return np.where(x >= 0, 1.0 - erfc, erfc - 1.0)


@_register("Erf", elementwise=True)
def _erf(node: Node, graph: Graph) -> NumpyStep:
    return _step(node, lambda ins, outs: _into([erf(ins[0]).astype(ins[0].dtype)], outs))


GELU_APPROXIMATIONS = ("none", "tanh")


@_register("Gelu", elementwise=True)
def _gelu(node: Node, graph: Graph) -> NumpyStep:
    """x·Φ(x) (opset 20), exactly or with the tanh approximation."""
    approximate = node.attr("approximate", "none")
    if approximate not in GELU_APPROXIMATIONS:
        raise PackedModelError(f"{node.describe()}: attribute approximate={approximate!r} must be 'none' or 'tanh'")

    def compute(ins: Arrays, outs: Arrays | None) -> Sequence[np.ndarray]:
        x = ins[0].astype(np.float64)
        if approximate == "tanh":
            cdf = 0.5 * (1.0 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
        else:
            cdf = 0.5 * (1.0 + erf(x / math.sqrt(2)))
        return _into([(x * cdf).astype(ins[0].dtype)], outs)

    return _step(node, compute)


@_register("Where", elementwise=True)
def _where(node: Node, graph: Graph) -> NumpyStep:
    return _step(node, lambda ins, outs: _into([np.where(*ins)], outs))


@_register("Cast", elementwise=True)
def _cast(node: Node, graph: Graph) -> NumpyStep:
    dtype = helper.tensor_dtype_to_np_dtype(node.attr("to"))
    return _step(node, lambda ins, outs: _into([ins[0].astype(dtype)], outs))


@_register("Identity", "Dropout", elementwise=True)
def _identity(node: Node, graph: Graph) -> NumpyStep:
    if len([o for o in node.outputs if o]) > 1:
        raise PackedModelError(
            f"{node.describe()}: the Dropout mask output is not supported (inference graphs do not use it)"
        )
    return _step(node, lambda ins, outs: [ins[0].view()], is_view=True)


# Shapes and layout ------------------------------------------------------------------------


def _reshaped(node: Node, shape_of: Callable[[Arrays], tuple]) -> NumpyStep:
    return _step(node, lambda ins, outs: [ins[0].reshape(shape_of(ins))], is_view=True)


@_register("Reshape")
def _reshape(node: Node, graph: Graph) -> NumpyStep:
    allow_zero = node.attr("allowzero", 0)

    def target(ins: Arrays) -> tuple:
        shape = [int(s) for s in ins[1]]
        if not allow_zero:
            shape = [ins[0].shape[i] if s == 0 else s for i, s in enumerate(shape)]
        return tuple(shape)

    return _reshaped(node, target)


@_register("Flatten")
def _flatten(node: Node, graph: Graph) -> NumpyStep:
    axis = node.attr("axis", 1)

    def target(ins: Arrays) -> tuple:
        shape = ins[0].shape
        split = axis % len(shape) if axis < 0 else axis
        return math.prod(shape[:split]), math.prod(shape[split:])

    return _reshaped(node, target)


def _axes(node: Node, ins: Arrays, index: int = 1) -> list[int] | None:
    if "axes" in node.attributes:
        return list(node.attributes["axes"])
    if len(ins) > index and ins[index] is not None:
        return [int(a) for a in ins[index]]
    return None


@_register("Squeeze")
def _squeeze(node: Node, graph: Graph) -> NumpyStep:
    def target(ins: Arrays) -> tuple:
        axes = _axes(node, ins)
        shape = ins[0].shape
        axes = [a % len(shape) for a in axes] if axes is not None else [i for i, s in enumerate(shape) if s == 1]
        return tuple(s for i, s in enumerate(shape) if i not in axes)

    return _reshaped(node, target)


@_register("Unsqueeze")
def _unsqueeze(node: Node, graph: Graph) -> NumpyStep:
    def target(ins: Arrays) -> tuple:
        axes = _axes(node, ins)
        rank = ins[0].ndim + len(axes)
        shape = list(ins[0].shape)
        for axis in sorted(a % rank for a in axes):
            shape.insert(axis, 1)
        return tuple(shape)

    return _reshaped(node, target)


@_register("Transpose")
def _transpose(node: Node, graph: Graph) -> NumpyStep:
    perm = node.attr("perm")
    return _step(node, lambda ins, outs: _into([np.ascontiguousarray(ins[0].transpose(perm))], outs))


@_register("Concat")
def _concat(node: Node, graph: Graph) -> NumpyStep:
    axis = node.attr("axis")
    return _step(node, lambda ins, outs: [np.concatenate(ins, axis=axis, out=None if outs is None else outs[0])])


@_register("Split")
def _split(node: Node, graph: Graph) -> NumpyStep:
    axis = node.attr("axis", 0)

    def compute(ins: Arrays, outs: Arrays | None) -> Sequence[np.ndarray]:
        x = ins[0]
        sizes = node.attr("split") or (list(ins[1]) if len(ins) > 1 and ins[1] is not None else None)
        if sizes is None:
            count = len(node.outputs)
            step = -(-x.shape[axis] // count)
            sizes = [min(step, x.shape[axis] - i * step) for i in range(count)]
        bounds = np.cumsum([0, *sizes])
        return _into([np.take(x, range(bounds[i], bounds[i + 1]), axis=axis) for i in range(len(sizes))], outs)

    return _step(node, compute)


@_register("Slice")
def _slice(node: Node, graph: Graph) -> NumpyStep:
    def compute(ins: Arrays, outs: Arrays | None) -> Sequence[np.ndarray]:
        x, starts, ends = ins[0], ins[1], ins[2]
        axes = ins[3] if len(ins) > 3 and ins[3] is not None else range(len(starts))
        steps = ins[4] if len(ins) > 4 and ins[4] is not None else [1] * len(starts)
        index = [slice(None)] * x.ndim
        for start, end, axis, step in zip(starts, ends, axes, steps):
            index[int(axis)] = slice(int(start), int(end), int(step))
        return _into([np.ascontiguousarray(x[tuple(index)])], outs)

    return _step(node, compute)


@_register("Gather")
def _gather(node: Node, graph: Graph) -> NumpyStep:
    axis = node.attr("axis", 0)
    return _step(node, lambda ins, outs: _into([np.take(ins[0], ins[1], axis=axis)], outs))


@_register("GatherND")
def _gather_nd(node: Node, graph: Graph) -> NumpyStep:
    batch_dims = node.attr("batch_dims", 0)

    def compute(ins: Arrays, outs: Arrays | None) -> Sequence[np.ndarray]:
        data, indices = ins[0], ins[1].astype(np.int64)
        depth = indices.shape[-1] if indices.ndim else 0
        if not 0 <= batch_dims < min(data.ndim, indices.ndim) or depth > data.ndim - batch_dims:
            raise PackedModelError(
                f"{node.describe()}: batch_dims={batch_dims} and indices of shape {indices.shape} do not fit "
                f"data of shape {data.shape}"
            )
        batch = data.shape[:batch_dims]
        if indices.shape[:batch_dims] != batch:
            raise PackedModelError(f"{node.describe()}: the batch dimensions of data and indices differ")
        sizes = np.asarray(data.shape[batch_dims : batch_dims + depth])
        if np.any(indices < -sizes) or np.any(indices >= sizes):
            raise PackedModelError(f"{node.describe()}: an index is outside data of shape {data.shape}")
        flat_data = data.reshape(-1, *data.shape[batch_dims:])
        flat_indices = (indices % sizes).reshape(math.prod(batch), -1, depth)
        gathered = [flat_data[b][tuple(flat_indices[b].T)] for b in range(flat_data.shape[0])]
        shape = (*indices.shape[:-1], *data.shape[batch_dims + depth :])
        return _into([np.ascontiguousarray(np.stack(gathered).reshape(shape))], outs)

    return _step(node, compute)


@_register("Resize")
def _resize(node: Node, graph: Graph) -> NumpyStep:
    """Nearest and linear Resize without antialiasing (resize.py); scales or sizes may be computed at run time."""
    mode, transform = node.attr("mode", "nearest"), node.attr("coordinate_transformation_mode", "half_pixel")
    nearest_mode = node.attr("nearest_mode", "round_prefer_floor")

    def compute(ins: Arrays, outs: Arrays | None) -> Sequence[np.ndarray]:
        x = ins[0]
        scales = ins[2] if len(ins) > 2 and ins[2] is not None and ins[2].size else None
        sizes = ins[3] if len(ins) > 3 and ins[3] is not None and ins[3].size else None
        axes = [a % x.ndim for a in node.attr("axes") or range(x.ndim)]
        given = sizes if sizes is not None else scales
        if given is None or len(given) != len(axes):
            raise PackedModelError(
                f"{node.describe()}: needs scales or sizes with one value per resized axis ({len(axes)}), "
                f"got {None if given is None else list(given)}"
            )
        if scales is not None and sizes is None and np.any(scales <= 0):
            raise PackedModelError(f"{node.describe()}: scales must be > 0, got {list(scales)}")
        shape, factors = output_shape(x.shape, axes, scales, sizes)
        if any(size < 0 for size in shape) or math.prod(shape) > 1 << 31:
            raise PackedModelError(f"{node.describe()}: output shape {shape} is not valid (negative or too large)")
        return _into([resize(x, shape, factors, mode, transform, nearest_mode)], outs)

    return _step(node, compute)


@_register("Shape")
def _shape(node: Node, graph: Graph) -> NumpyStep:
    start, end = node.attr("start", 0), node.attr("end")
    return _step(node, lambda ins, outs: _into([np.asarray(ins[0].shape[start:end], np.int64)], outs))


@_register("Size")
def _size(node: Node, graph: Graph) -> NumpyStep:
    return _step(node, lambda ins, outs: _into([np.asarray(ins[0].size, np.int64)], outs))


@_register("Expand")
def _expand(node: Node, graph: Graph) -> NumpyStep:
    def compute(ins: Arrays, outs: Arrays | None) -> Sequence[np.ndarray]:
        shape = np.broadcast_shapes(ins[0].shape, tuple(int(s) for s in ins[1]))
        return _into([np.ascontiguousarray(np.broadcast_to(ins[0], shape))], outs)

    return _step(node, compute)


@_register("ConstantOfShape")
def _constant_of_shape(node: Node, graph: Graph) -> NumpyStep:
    value = node.attr("value", np.zeros(1, np.float32))
    return _step(
        node, lambda ins, outs: _into([np.full(tuple(int(s) for s in ins[0]), value.reshape(-1)[0], value.dtype)], outs)
    )


@_register("Range")
def _range(node: Node, graph: Graph) -> NumpyStep:
    return _step(node, lambda ins, outs: _into([np.arange(ins[0], ins[1], ins[2]).astype(ins[0].dtype)], outs))


@_register("Tile")
def _tile(node: Node, graph: Graph) -> NumpyStep:
    return _step(node, lambda ins, outs: _into([np.tile(ins[0], [int(r) for r in ins[1]])], outs))


@_register("Pad")
def _pad(node: Node, graph: Graph) -> NumpyStep:
    mode = {"constant": "constant", "reflect": "reflect", "edge": "edge", "wrap": "wrap"}.get(
        node.attr("mode", "constant")
    )
    if mode is None:
        raise PackedModelError(f"{node.describe()}: Pad mode {node.attr('mode')!r} is not supported")

    def compute(ins: Arrays, outs: Arrays | None) -> Sequence[np.ndarray]:
        x = ins[0]
        pads = [int(p) for p in (node.attr("pads") if "pads" in node.attributes else ins[1])]
        axes = [int(a) % x.ndim for a in ins[3]] if len(ins) > 3 and ins[3] is not None else list(range(x.ndim))
        width = [(0, 0)] * x.ndim
        for i, axis in enumerate(axes):
            width[axis] = (pads[i], pads[i + len(axes)])
        if mode != "constant":
            return _into([np.pad(x, width, mode=mode)], outs)
        value = (
            node.attr("value", 0.0) if len(ins) < 3 or ins[2] is None else ins[2].reshape(-1)[0] if ins[2].size else 0
        )
        return _into([np.pad(x, width, constant_values=value)], outs)

    return _step(node, compute)


@_register("DepthToSpace", "SpaceToDepth")
def _depth_space(node: Node, graph: Graph) -> NumpyStep:
    b, crd = node.attr("blocksize"), node.attr("mode", "DCR") == "CRD"

    def compute(ins: Arrays, outs: Arrays | None) -> Sequence[np.ndarray]:
        x = ins[0]
        n, c, h, w = x.shape
        if node.op_type == "SpaceToDepth":
            y = x.reshape(n, c, h // b, b, w // b, b).transpose(0, 3, 5, 1, 2, 4).reshape(n, c * b * b, h // b, w // b)
        elif crd:
            y = (
                x.reshape(n, c // (b * b), b, b, h, w)
                .transpose(0, 1, 4, 2, 5, 3)
                .reshape(n, c // (b * b), h * b, w * b)
            )
        else:
            y = (
                x.reshape(n, b, b, c // (b * b), h, w)
                .transpose(0, 3, 4, 1, 5, 2)
                .reshape(n, c // (b * b), h * b, w * b)
            )
        return _into([np.ascontiguousarray(y)], outs)

    return _step(node, compute)


# Reductions and normalisation ----------------------------------------------------------


@_register("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "GlobalAveragePool", "GlobalMaxPool")
def _reduce(node: Node, graph: Graph) -> NumpyStep:
    op = node.op_type
    function = {
        "Mean": np.mean,
        "Sum": np.sum,
        "Max": np.max,
        "Min": np.min,
        "Prod": np.prod,
        "AveragePool": np.mean,
        "MaxPool": np.max,
    }[op.removeprefix("Reduce").removeprefix("Global")]
    keepdims = bool(node.attr("keepdims", 1)) or op.startswith("Global")

    def compute(ins: Arrays, outs: Arrays | None) -> Sequence[np.ndarray]:
        x = ins[0]
        axes = tuple(range(2, x.ndim)) if op.startswith("Global") else _axes(node, ins)
        if axes is not None and len(axes) == 0 and node.attr("noop_with_empty_axes", 0):
            return _into([x.copy()], outs)
        if axes and not all(isinstance(a, int) and -x.ndim <= a < x.ndim for a in axes):
            raise PackedModelError(f"{node.describe()}: axes {axes} must be integers in [-{x.ndim}, {x.ndim - 1}]")
        axes = None if not axes else tuple(a % x.ndim for a in axes)
        result = function(x, axis=axes, keepdims=keepdims, out=None if outs is None else outs[0])
        return [np.asarray(result, x.dtype)]

    return _step(node, compute)


@_register("ArgMax", "ArgMin")
def _arg(node: Node, graph: Graph) -> NumpyStep:
    axis, keepdims, last = node.attr("axis", 0), node.attr("keepdims", 1), node.attr("select_last_index", 0)
    function = np.argmax if node.op_type == "ArgMax" else np.argmin

    def compute(ins: Arrays, outs: Arrays | None) -> Sequence[np.ndarray]:
        x = np.flip(ins[0], axis) if last else ins[0]
        index = function(x, axis=axis, keepdims=bool(keepdims))
        if last:
            index = x.shape[axis] - 1 - index
        return _into([index.astype(np.int64)], outs)

    return _step(node, compute)


@_register("Softmax", "LogSoftmax")
def _softmax(node: Node, graph: Graph) -> NumpyStep:
    legacy = graph.opset < 13  # before opset 13 the input is flattened to 2-D at `axis`
    axis = node.attr("axis", 1 if legacy else -1)

    def compute(ins: Arrays, outs: Arrays | None) -> Sequence[np.ndarray]:
        x = ins[0]
        axes = tuple(range(axis % x.ndim, x.ndim)) if legacy else (axis,)
        shifted = x - np.max(x, axis=axes, keepdims=True)
        total = np.sum(np.exp(shifted), axis=axes, keepdims=True)
        y = shifted - np.log(total) if node.op_type == "LogSoftmax" else np.exp(shifted) / total
        return _into([y.astype(x.dtype)], outs)

    return _step(node, compute)


def batch_norm_affine(node: Node, graph: Graph) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) per channel with BatchNormalization(x) = a·x + b (float32, as the step computes it)."""
    scale, bias, mean, var = (
        _const(node, graph, i, what) for i, what in enumerate(("scale", "B", "mean", "var"), start=1)
    )
    a = (scale / np.sqrt(var + np.float32(node.attr("epsilon", 1e-5)))).astype(np.float32)
    return a, (bias - mean * a).astype(np.float32)


_MONOTONE["BatchNormalization"] = lambda node, graph, position: (
    position == 0 and bool(np.all(batch_norm_affine(node, graph)[0] >= 0))
)


@_register("BatchNormalization", elementwise=True)
def _batch_norm(node: Node, graph: Graph) -> NumpyStep:
    if node.attr("training_mode", 0) or len([o for o in node.outputs if o]) > 1:
        raise PackedModelError(
            f"{node.describe()}: only inference BatchNormalization (one output) is supported; "
            "export the model in eval mode"
        )
    a, b = batch_norm_affine(node, graph)

    def compute(ins: Arrays, outs: Arrays | None) -> Sequence[np.ndarray]:
        x = ins[0]
        shape = (1, -1) + (1,) * (x.ndim - 2)
        y = np.multiply(x, a.reshape(shape), out=None if outs is None else outs[0])
        return [np.add(y, b.reshape(shape), out=y)]

    return _step(node, compute)


@_register("LayerNormalization")
def _layer_norm(node: Node, graph: Graph) -> NumpyStep:
    axis, epsilon = node.attr("axis", -1), np.float32(node.attr("epsilon", 1e-5))

    def compute(ins: Arrays, outs: Arrays | None) -> Sequence[np.ndarray]:
        x = ins[0]
        axes = tuple(range(axis % x.ndim, x.ndim))
        centred = x - x.mean(axis=axes, keepdims=True)
        y = centred / np.sqrt((centred * centred).mean(axis=axes, keepdims=True) + epsilon) * ins[1]
        if len(ins) > 2 and ins[2] is not None:
            y = y + ins[2]
        return _into([y.astype(x.dtype)], outs)

    return _step(node, compute)


@_register("AveragePool")
def _average_pool(node: Node, graph: Graph) -> NumpyStep:
    kernel, strides = node.attr("kernel_shape"), node.attr("strides") or [1] * len(node.attr("kernel_shape"))
    dilations = node.attr("dilations") or [1] * len(kernel)
    include_pad, ceil_mode = node.attr("count_include_pad", 0), node.attr("ceil_mode", 0)
    if node.attr("auto_pad", "NOTSET") not in ("NOTSET", "VALID") or len(kernel) != 2:
        raise PackedModelError(f"{node.describe()}: only 2-D AveragePool with explicit pads is supported")
    pads = node.attr("pads") or [0, 0, 0, 0]
    window = Window(tuple(kernel), tuple(strides), tuple(pads), tuple(dilations))

    def compute(ins: Arrays, outs: Arrays | None) -> Sequence[np.ndarray]:
        x = ins[0]
        n, c, h, w = x.shape
        out_h, out_w = window.out_size(h, w, bool(ceil_mode))
        extra_h = max(window.rows_read(out_h, 0) - (h + pads[0] + pads[2]), 0)
        extra_w = max(window.rows_read(out_w, 1) - (w + pads[1] + pads[3]), 0)
        width = ((0, 0), (0, 0), (pads[0], pads[2] + extra_h), (pads[1], pads[3] + extra_w))
        padded = np.pad(x, width)
        counted = np.pad(np.ones((h, w), x.dtype), width[2:], constant_values=0)
        if include_pad:
            counted[: h + pads[0] + pads[2], : w + pads[1] + pads[3]] = 1
        total = np.zeros((n, c, out_h, out_w), np.float64)
        count = np.zeros((out_h, out_w), np.float64)
        for i in range(kernel[0]):
            for j in range(kernel[1]):
                rows = slice(i * dilations[0], i * dilations[0] + strides[0] * (out_h - 1) + 1, strides[0])
                cols = slice(j * dilations[1], j * dilations[1] + strides[1] * (out_w - 1) + 1, strides[1])
                total += padded[:, :, rows, cols]
                count += counted[rows, cols]
        return _into([(total / count).astype(x.dtype)], outs)

    return _step(node, compute)


# Matrix products ------------------------------------------------------------------------


@_register("MatMul")
def _matmul(node: Node, graph: Graph) -> NumpyStep:
    return _step(node, lambda ins, outs: [np.matmul(ins[0], ins[1], out=None if outs is None else outs[0])])


@_register("Gemm")
def _gemm(node: Node, graph: Graph) -> NumpyStep:
    alpha, beta = np.float32(node.attr("alpha", 1.0)), np.float32(node.attr("beta", 1.0))
    trans_a, trans_b = node.attr("transA", 0), node.attr("transB", 0)

    def compute(ins: Arrays, outs: Arrays | None) -> Sequence[np.ndarray]:
        a = ins[0].T if trans_a else ins[0]
        b = ins[1].T if trans_b else ins[1]
        y = np.matmul(a, b, out=None if outs is None else outs[0])
        if alpha != 1:
            y *= alpha
        if len(ins) > 2 and ins[2] is not None:
            y += ins[2] * beta if beta != 1 else ins[2]
        return [y]

    return _step(node, compute)
