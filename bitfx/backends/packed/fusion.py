"""Fusions the executor finds in a lowered graph.

Thresholds (packed output). Between binary layers the float output y = a_c·d + b_c of one layer
only matters through sign(f(y)) taken by the next (f: the elementwise ops in between, e.g.
BatchNorm affine or a BatchNormalization node, ReLU, RSign shift; optionally one MaxPool).
Since d is an integer in [−K, K], evaluating sign(f(a_c·d + b_c)) for every d — with the same
float32 operations the file specifies — gives each channel's exact bit pattern; when it is
monotone in d it is one integer threshold t_c and a flip (a decreasing pattern, e.g. a negative
BN scale): bit = (d < t_c) XOR flip_c. A channel whose sign never changes gets t = ±(K+1). The
layer then writes packed bits and activations never round-trip through float. MaxPool commutes
with sign when every op of the chain is non-decreasing, and max of ±1 values is an AND of bits,
so it runs on packed data.

Epilogues. A float convolution (binary or not) whose only reader is an Add (residual) and/or a
Relu/Clip absorbs them: y = clamp(a·conv + b + residual).

Pooled stem. An ONNX Conv (after its epilogue, without a residual) whose only reader is a 2-D
MaxPool runs with it in one pass (`bitfx_float_conv_maxpool`): the pool reads the convolution's
rows while they are in cache and the full-size convolution output is never written.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bitfx.backends.packed.errors import PackedModelError
from bitfx.backends.packed.graph import Graph, Node
from bitfx.backends.packed.kernels import NO_CLAMP, BinaryConv
from bitfx.backends.packed.numpy_ops import ELEMENTWISE, NUMPY_OPS, clip_bounds, non_decreasing
from bitfx.backends.packed.program import Epilogue, PackedLayout
from bitfx.format import BINARY_GEMM, BINARY_OPS, qualified

QUALIFIED_BINARY_OPS = tuple(qualified(op) for op in BINARY_OPS)
# Elementwise ops whose result is a number (what sign() can follow); logic and casts are not.
CHAIN_OPS = ELEMENTWISE - {
    "Equal",
    "Less",
    "Greater",
    "LessOrEqual",
    "GreaterOrEqual",
    "And",
    "Or",
    "Xor",
    "Not",
    "IsNaN",
    "Cast",
    "Where",
}


def is_binary(node: Node) -> bool:
    return node.qualified in QUALIFIED_BINARY_OPS


def binarizes(node: Node) -> bool:
    """A binary op that takes sign() of its input (reads packed data)."""
    return is_binary(node) and node.attr("binarize_input", 1) == 1


def reader_layout(node: Node) -> PackedLayout:
    """The packed layout a binarizing reader wants for its input X."""
    if node.op_type == BINARY_GEMM:
        return PackedLayout()
    pads = tuple(node.attr("pads", (0, 0, 0, 0)))
    return PackedLayout(node.attr("group", 1), pads, -1 if node.attr("pad_value", 0) == -1 else 1)


def merged_layout(layouts: list[PackedLayout]) -> PackedLayout | None:
    """One layout that serves all readers (largest border), or None when they disagree on groups or border value."""
    if len({(layout.groups, layout.pad) for layout in layouts}) != 1:
        return None
    border = tuple(max(layout.border[i] for layout in layouts) for i in range(4))
    return PackedLayout(layouts[0].groups, border, layouts[0].pad)


@dataclass
class ThresholdChain:
    """A binary layer whose output stays packed: the nodes it absorbs, the MaxPool among them
    (run on packed data), the value its readers binarize, and the per-channel thresholds."""

    producer: Node
    nodes: list[Node]
    pool: Node | None
    end: str
    readers: list[Node]
    layout: PackedLayout
    threshold: np.ndarray = field(repr=False)
    flip: np.ndarray = field(repr=False)

    def pool_layout(self) -> PackedLayout:
        """Layout of the producer's output when a MaxPool follows: border of −1 (ignored taps)."""
        pads = tuple(self.pool.attr("pads") or (0, 0, 0, 0))
        if self.pool.attr("ceil_mode", 0):
            strides = self.pool.attr("strides") or (1, 1)
            pads = (pads[0], pads[1], pads[2] + strides[0] - 1, pads[3] + strides[1] - 1)
        return PackedLayout(1, pads, -1)


def find_threshold_chain(
    producer: Node, kernel: BinaryConv, graph: Graph, readers_of: dict[str, list[Node]]
) -> ThresholdChain | None:
    """The chain from `producer` (a binarizing, group-1 binary op) to the binary layers that
    binarize its output, if it can stay packed all the way (module docstring)."""
    if producer.attr("group", 1) != 1 or producer.attr("binarize_input", 1) != 1:
        return None
    gemm = producer.op_type == BINARY_GEMM
    value, nodes, pool = producer.outputs[0], [], None
    while True:
        if value in graph.outputs:
            return None
        readers = readers_of.get(value, [])
        if readers and all(binarizes(r) and r.inputs[0] == value and value not in r.inputs[1:] for r in readers):
            break
        if len(readers) != 1:
            return None
        reader = readers[0]
        if reader.qualified == "MaxPool" and pool is None and not gemm and _plain_max_pool(reader):
            pool = reader
        elif reader.qualified not in CHAIN_OPS or not _per_channel_constants(
            reader, value, graph, gemm, kernel.out_channels
        ):
            return None
        nodes.append(reader)
        value = reader.outputs[0]
    if any((r.op_type == BINARY_GEMM) != gemm or r.attr("group", 1) != 1 for r in readers):
        return None
    layout = merged_layout([reader_layout(r) for r in readers])
    if layout is None:
        return None
    if pool is not None and not all(
        non_decreasing(n, graph, _position(n, v)) for n, v in _chain_inputs(producer, nodes) if n is not pool
    ):
        return None
    levels = _sign_levels(producer, kernel, nodes, pool, graph, gemm)
    thresholds = _thresholds(levels, kernel.k)
    if thresholds is None:
        return None
    return ThresholdChain(producer, nodes, pool, value, readers, layout, *thresholds)


def _plain_max_pool(node: Node) -> bool:
    return (
        len([o for o in node.outputs if o]) == 1
        and len(node.attr("kernel_shape")) == 2
        and node.attr("auto_pad", "NOTSET") in ("NOTSET", "VALID")
    )


def _chain_inputs(producer: Node, nodes: list[Node]) -> list[tuple[Node, str]]:
    """Each chain node with the chain value it reads."""
    values = [producer.outputs[0]] + [n.outputs[0] for n in nodes[:-1]]
    return list(zip(nodes, values))


def _position(node: Node, value: str) -> int:
    return node.inputs.index(value)


def _per_channel_constants(node: Node, value: str, graph: Graph, gemm: bool, channels: int) -> bool:
    """Every input except the chain value is a constant that varies at most per channel (of `channels`)."""
    if node.inputs.count(value) != 1:
        return False
    if node.op_type == "Clip" or node.op_type == "Relu":
        try:
            clip_bounds(node, graph)
        except PackedModelError:
            return False
        return True
    if node.op_type == "BatchNormalization":  # scale, B, mean, var: one value per channel each
        values = [graph.constant(name) for name in node.inputs[1:]]
        return not node.attr("training_mode", 0) and all(
            value is not None and value.shape == (channels,) for value in values
        )
    rank = 2 if gemm else 4
    for name in node.inputs:
        if not name or name == value:
            continue
        constant = graph.constant(name)
        if constant is None or constant.ndim > rank:
            return False
        shape = (1,) * (rank - constant.ndim) + constant.shape
        if any(size != 1 for axis, size in enumerate(shape) if axis != 1) or shape[1] not in (1, channels):
            return False
    return True


def _sign_levels(
    producer: Node, kernel: BinaryConv, nodes: list[Node], pool: Node | None, graph: Graph, gemm: bool
) -> np.ndarray:
    """bit(c, d) = sign(f_c(scale_c·d + bias_c)) < 0 for d = −K … K, with the file's float32 ops."""
    d = np.arange(-kernel.k, kernel.k + 1, dtype=np.float32)
    scale = graph.constant(producer.inputs[2]).astype(np.float32)
    bias = graph.constant(producer.inputs[3]).astype(np.float32)
    if gemm:
        value = d[:, None] * scale[None, :] + bias[None, :]  # (d, channel): channels on axis 1
    else:
        value = d[None, None, :, None] * scale[None, :, None, None] + bias[None, :, None, None]
    for node, chain_value in _chain_inputs(producer, nodes):
        if node is pool:
            continue
        step = NUMPY_OPS[node.op_type](node, graph)
        inputs = [value if name == chain_value else graph.constant(name) if name else None for name in node.inputs]
        value = np.asarray(step.eager(inputs)[0])
    levels = np.asarray(value) < 0
    return levels.T if gemm else levels[0, :, :, 0]


def _thresholds(levels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Per channel (t, flip) with bit(d) = (d < t) XOR flip, or None when a pattern is not monotone."""
    steps = np.diff(levels.astype(np.int8), axis=1)
    if np.any(np.count_nonzero(steps, axis=1) > 1):
        return None
    first = levels[:, 0]
    changes = np.any(steps != 0, axis=1)
    where = np.argmax(steps != 0, axis=1) + 1 - k  # the first d after the change
    threshold = np.where(changes, where, np.where(first, k + 1, -k - 1)).astype(np.int64)
    flip = changes & ~first  # 0…0 1…1: bit = d ≥ t
    return threshold, flip


@dataclass
class EpilogueFusion:
    epilogue: Epilogue
    nodes: list[Node]  # absorbed, in graph order
    output: str


def find_epilogue(node: Node, graph: Graph, readers_of: dict[str, list[Node]]) -> EpilogueFusion | None:
    """Add (residual) and/or Relu/Clip readers a float convolution can absorb."""
    value, nodes, residual, clamp = node.outputs[0], [], None, NO_CLAMP
    readers = readers_of.get(value, [])
    if value in graph.outputs or len(readers) != 1:
        return None
    reader = readers[0]
    if reader.qualified == "Add" and len(reader.inputs) == 2 and reader.inputs.count(value) == 1:
        residual = reader.inputs[1 - reader.inputs.index(value)]
        nodes.append(reader)
        value = reader.outputs[0]
        readers = readers_of.get(value, [])
        reader = readers[0] if len(readers) == 1 and value not in graph.outputs else None
    if reader is not None and reader.qualified in ("Relu", "Clip") and reader.inputs[0] == value:
        try:
            clamp = clip_bounds(reader, graph)
        except PackedModelError:
            clamp = None
        if clamp is not None:
            nodes.append(reader)
            value = reader.outputs[0]
        else:
            clamp = NO_CLAMP
    if not nodes:
        return None
    return EpilogueFusion(Epilogue(residual, clamp, tuple(n.name for n in nodes)), nodes, value)


def find_conv_pool(
    node: Node, fusion: EpilogueFusion | None, graph: Graph, readers_of: dict[str, list[Node]]
) -> Node | None:
    """The MaxPool that an ONNX Conv (with its epilogue `fusion`) can run in the same pass, if any."""
    if node.qualified != "Conv" or (fusion is not None and fusion.epilogue.residual is not None):
        return None
    value = fusion.output if fusion else node.outputs[0]
    readers = readers_of.get(value, [])
    if value in graph.outputs or len(readers) != 1:
        return None
    reader = readers[0]
    if reader.qualified != "MaxPool" or reader.inputs[0] != value or not _plain_max_pool(reader):
        return None
    return reader
