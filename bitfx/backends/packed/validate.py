"""Checks that make an ONNX file safe to hand to the compiled kernels: an ONNX file is untrusted
input, and the kernels trust the sizes they are given. `check_graph` runs at load, before any
kernel is prepared, and returns every problem found; each names the node, the attribute or input
at fault and what is valid (docs/packed-runtime.md, "Untrusted files").

What depends on the input's shape (channel counts, a window larger than the padded input) is
checked in Python when a shape is first run, still before any kernel call.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from onnx import defs

from bitfx.backends.packed import resize
from bitfx.backends.packed.errors import PackedModelError
from bitfx.backends.packed.graph import Graph, Node
from bitfx.backends.packed.numpy_ops import GELU_APPROXIMATIONS
from bitfx.format import BINARY_CONV2D, BINARY_GEMM, DOMAIN, packed_words
from bitfx.format.domain import INT8_CONVS_METADATA_KEY
from bitfx.format.int8_marker import Int8MarkerError, decode_int8_marker

MAX_WINDOW = 1 << 16  # largest kernel size, stride, dilation or pad
MAX_CHANNELS = 1 << 24  # largest channel count, feature count or group count
WINDOW_OPS = ("Conv", "MaxPool", "AveragePool")
AUTO_PADS = ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER")
BINARY_INPUTS = ("X", "W", "scale", "bias")  # of both bitfx ops


class Problems(list):
    """The problems of one node, each prefixed with the node's description."""

    def __init__(self, node: Node) -> None:
        super().__init__()
        self.node = node

    def add(self, message: str) -> None:
        self.append(f"{self.node.describe()}: {message}")


def check_graph(graph: Graph) -> list[str]:
    """Every problem that makes a node of `graph` unsafe or impossible to run, one line each."""
    problems: list[str] = []
    for node in graph.nodes:
        found = Problems(node)
        _check_arity(node, graph.opset, found)
        check = _CHECKS.get(node.qualified)
        if check is not None and not found:
            check(node, graph, found)
        problems.extend(found)
    return problems


def marked_int8_convs(graph: Graph) -> dict[str, tuple[float, float]] | None:
    """The file's int8 marker (bitfx.format.int8_marker) as {Conv node name: input range}, None when
    the file has none. Raises `PackedModelError` naming every problem: a malformed marker, a name the
    graph does not have, a node that is not a float Conv."""
    text = graph.metadata.get(INT8_CONVS_METADATA_KEY)
    if text is None:
        return None
    where = f"the file's int8 marker (metadata {INT8_CONVS_METADATA_KEY!r})"
    try:
        ranges = decode_int8_marker(text)
    except Int8MarkerError as error:
        raise PackedModelError(f"{where} is malformed: {error}") from None
    nodes = {node.name: node for node in graph.nodes}
    problems = []
    for name in ranges:
        node = nodes.get(name)
        if node is None:
            problems.append(f"it marks node {name!r}, which the graph does not have")
        elif node.qualified != "Conv":
            problems.append(f"it marks {node.describe()}, which is not a float Conv")
    if problems:
        raise PackedModelError(f"{where} is wrong:\n  " + "\n  ".join(problems))
    return ranges


def _check_arity(node: Node, opset: int, found: Problems) -> None:
    """Required inputs present and outputs named, as the op's ONNX schema (or the bitfx contract) says."""
    if node.domain == DOMAIN:
        names, low, high = BINARY_INPUTS, len(BINARY_INPUTS), len(BINARY_INPUTS)
    else:
        try:
            schema = defs.get_schema(node.op_type, opset or defs.onnx_opset_version(), "")
        except defs.SchemaError:
            return
        names, low, high = [i.name for i in schema.inputs], schema.min_input, schema.max_input
    absent = [i for i in range(low) if i >= len(node.inputs) or not node.inputs[i]]
    missing = [names[i] if i < len(names) else str(i) for i in absent]
    if missing:
        found.add(f"required input(s) {', '.join(missing)} missing: {node.op_type} needs at least {low}")
    elif len(node.inputs) > high:
        found.add(f"{node.op_type} takes at most {high} input(s), got {len(node.inputs)}")
    if not node.outputs or not node.outputs[0]:
        found.add("its first output has no name")


def _ints(node: Node, name: str, found: Problems, *, count: int, low: int, default: tuple | None) -> tuple | None:
    """Attribute `name` as `count` integers in [low, MAX_WINDOW] (the default when absent), else None."""
    value = node.attributes.get(name)
    if value is None or (isinstance(value, list) and not value and default is not None):
        return default
    if not isinstance(value, list) or len(value) != count or not all(isinstance(v, int) for v in value):
        found.add(f"attribute {name}={value!r} must be a list of {count} values (integers)")
        return None
    bad = [v for v in value if not low <= v <= MAX_WINDOW]
    if bad:
        found.add(f"attribute {name}={value} must hold integers >= {low} and at most {MAX_WINDOW}, got {bad}")
        return None
    return tuple(value)


def _int(node: Node, name: str, found: Problems, *, low: int, high: int, default: int | None) -> int | None:
    value = node.attributes.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        found.add(f"attribute {name}={value!r} must be an integer >= {low} and at most {high}")
        return None
    return value


def _window(node: Node, found: Problems, *, kernel_required: bool, dims: int = 2) -> tuple | None:
    """The kernel_shape (None when absent and optional) after checking strides, dilations and pads
    (`dims` spatial dimensions)."""
    kernel = _ints(node, "kernel_shape", found, count=dims, low=1, default=None if kernel_required else ())
    if kernel_required and "kernel_shape" not in node.attributes:
        found.add(f"attribute kernel_shape is missing; it must be a list of {dims} values (integers >= 1)")
    _ints(node, "strides", found, count=dims, low=1, default=(1,) * dims)
    _ints(node, "dilations", found, count=dims, low=1, default=(1,) * dims)
    _ints(node, "pads", found, count=2 * dims, low=0, default=(0,) * 2 * dims)
    if node.attr("auto_pad", "NOTSET") not in AUTO_PADS:
        found.add(f"attribute auto_pad={node.attr('auto_pad')!r} must be one of {', '.join(AUTO_PADS)}")
    if node.attr("ceil_mode", 0) not in (0, 1):
        found.add(f"attribute ceil_mode={node.attr('ceil_mode')!r} must be 0 or 1")
    return kernel or None


def _constant(node: Node, graph: Graph, index: int, what: str, found: Problems) -> np.ndarray | None:
    name = node.inputs[index] if index < len(node.inputs) else ""
    value = graph.constant(name)
    if name and value is None:
        found.add(f"input {what} ({name!r}) must be a constant (an initializer), not computed at run time")
    return value


def _per_channel(node: Node, graph: Graph, index: int, what: str, channels: int, found: Problems) -> None:
    """Input `index` is a constant vector of exactly `channels` values (the declared output channels)."""
    value = _constant(node, graph, index, what, found)
    if value is not None and value.shape != (channels,):
        found.add(
            f"input {what} must hold one value per output channel: shape ({channels},) as W declares "
            f"{channels} output channels, got shape {value.shape}"
        )


def _check_conv(node: Node, graph: Graph, found: Problems) -> None:
    """2-D convolution, or 1-D (C_out×C_in/group×k weights: run as a 2-D one of height 1). The
    spatial rank is kernel_shape's length when given, else W's."""
    weights = _constant(node, graph, 1, "W (weights)", found)
    declared = node.attributes.get("kernel_shape")
    if isinstance(declared, list) and len(declared) in (1, 2):
        dims = len(declared)
    else:
        dims = 1 if weights is not None and weights.ndim == 3 else 2
    kernel = _window(node, found, kernel_required=False, dims=dims)
    group = _int(node, "group", found, low=1, high=MAX_CHANNELS, default=1)
    if weights is None:
        return
    if weights.ndim != dims + 2 or not np.issubdtype(weights.dtype, np.floating):
        shape = "4 dimensions (C_out×C_in/group×kh×kw)" if dims == 2 else "3 dimensions (1-D: C_out×C_in/group×k)"
        found.add(f"input W must be a float tensor with {shape}, got {weights.shape}")
        return
    if kernel is not None and kernel != weights.shape[2:]:
        found.add(f"attribute kernel_shape={list(kernel)} does not match W's kernel {weights.shape[2:]}")
    if group is not None and weights.shape[0] % group:
        found.add(f"attribute group={group} must divide W's {weights.shape[0]} output channels")
    if len(node.inputs) > 2 and node.inputs[2]:
        _per_channel(node, graph, 2, "B (bias)", weights.shape[0], found)


def _check_pool(node: Node, graph: Graph, found: Problems) -> None:
    _window(node, found, kernel_required=True)


def _check_binary_conv(node: Node, graph: Graph, found: Problems) -> None:
    kernel = _window(node, found, kernel_required=True)
    group = _int(node, "group", found, low=1, high=MAX_CHANNELS, default=1)
    in_channels = _int(node, "in_channels", found, low=1, high=MAX_CHANNELS, default=None)
    _int(node, "pad_value", found, low=-1, high=1, default=0)
    _int(node, "binarize_input", found, low=0, high=1, default=1)
    weights = _constant(node, graph, 1, "W", found)
    if weights is None or None in (kernel, group, in_channels):
        return
    if weights.ndim != 4 or weights.dtype != np.uint64:
        found.add(f"input W must be packed uint64 words C_out×kh×kw×words, got {weights.dtype} {weights.shape}")
        return
    out_channels = weights.shape[0]
    if in_channels % group or out_channels % group:
        found.add(
            f"attribute group={group} must divide in_channels={in_channels} and W's {out_channels} output channels"
        )
        return
    expected = (*kernel, packed_words(in_channels // group))
    if weights.shape[1:] != expected:
        found.add(
            f"input W has shape {weights.shape}; kernel_shape={list(kernel)} and in_channels={in_channels} "
            f"in group={group} need {out_channels}×{expected[0]}×{expected[1]}×{expected[2]}"
        )
    _per_channel(node, graph, 2, "scale", out_channels, found)
    _per_channel(node, graph, 3, "bias", out_channels, found)


def _check_binary_gemm(node: Node, graph: Graph, found: Problems) -> None:
    in_features = _int(node, "in_features", found, low=1, high=MAX_CHANNELS, default=None)
    _int(node, "binarize_input", found, low=0, high=1, default=1)
    weights = _constant(node, graph, 1, "W", found)
    if weights is None or in_features is None:
        return
    if weights.ndim != 2 or weights.dtype != np.uint64:
        found.add(f"input W must be packed uint64 words with 2 dimensions (C_out×words), got {weights.shape}")
        return
    if weights.shape[1] != packed_words(in_features):
        found.add(
            f"attribute in_features={in_features} needs {packed_words(in_features)} words per row of W, "
            f"got W of shape {weights.shape}"
        )
    _per_channel(node, graph, 2, "scale", weights.shape[0], found)
    _per_channel(node, graph, 3, "bias", weights.shape[0], found)


def _one_of(node: Node, name: str, default: str, valid: tuple[str, ...], found: Problems) -> None:
    if node.attr(name, default) not in valid:
        found.add(f"attribute {name}={node.attr(name)!r} must be one of {', '.join(valid)}")


def _check_resize(node: Node, graph: Graph, found: Problems) -> None:
    _one_of(node, "mode", "nearest", resize.MODES, found)
    _one_of(node, "coordinate_transformation_mode", "half_pixel", resize.TRANSFORMS, found)
    _one_of(node, "nearest_mode", "round_prefer_floor", resize.NEAREST_MODES, found)
    _one_of(node, "keep_aspect_ratio_policy", "stretch", ("stretch",), found)
    _int(node, "antialias", found, low=0, high=0, default=0)
    axes = node.attributes.get("axes")
    if axes is not None and (not isinstance(axes, list) or not all(isinstance(a, int) for a in axes)):
        found.add(f"attribute axes={axes!r} must be a list of integers")
    scales = graph.constant(node.inputs[2]) if len(node.inputs) > 2 else None  # may be computed at run time
    if scales is not None and scales.size and not (np.all(np.isfinite(scales)) and np.all(scales > 0)):
        found.add(f"input scales must be finite and > 0, got {scales.tolist()}")


def _check_gelu(node: Node, graph: Graph, found: Problems) -> None:
    _one_of(node, "approximate", "none", GELU_APPROXIMATIONS, found)


def _check_gather_nd(node: Node, graph: Graph, found: Problems) -> None:
    _int(node, "batch_dims", found, low=0, high=MAX_WINDOW, default=0)


_CHECKS: dict[str, Callable[[Node, Graph, Problems], None]] = {
    "Conv": _check_conv,
    "MaxPool": _check_pool,
    "AveragePool": _check_pool,
    "Resize": _check_resize,
    "Gelu": _check_gelu,
    "GatherND": _check_gather_nd,
    f"{DOMAIN}.{BINARY_CONV2D}": _check_binary_conv,
    f"{DOMAIN}.{BINARY_GEMM}": _check_binary_gemm,
}
