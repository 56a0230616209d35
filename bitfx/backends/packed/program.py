"""The types the compiler produces (compiler.py): the `Program` (ordered steps, the graph, the
report), the `CompileReport`, and the descriptions of fusions and layouts that its steps carry
(`Epilogue`, `PackedLayout`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from bitfx.backends.packed.graph import Graph
from bitfx.backends.packed.kernels import NO_CLAMP, Pads
from bitfx.backends.packed.steps import Step


@dataclass
class Epilogue:
    """What a convolution step does to its output before writing it: add a `residual` value
    (a fused Add) and clamp to `clamp` (a fused Relu or Clip). `fused` names the absorbed nodes."""

    residual: str | None = None
    clamp: tuple[float, float] = NO_CLAMP
    fused: tuple[str, ...] = ()


@dataclass(frozen=True)
class PackedLayout:
    """How a packed activation is stored: channel groups, border size and border value (±1)."""

    groups: int = 1
    border: Pads = (0, 0, 0, 0)
    pad: int = 1


@dataclass
class CompileReport:
    """What the compiler made of the graph (counts of nodes and of fusions)."""

    binary_layers: int = 0
    packed_outputs: int = 0  # binary layers whose output stays packed (thresholds)
    packed_max_pools: int = 0
    packs: int = 0  # float → packed conversions
    fused_epilogues: int = 0  # convolutions that absorbed an Add and/or Relu/Clip
    fused_max_pools: int = 0  # float convolutions whose MaxPool reader runs in the same pass (the stem)
    int8_convs: int = 0  # float convolutions run on the int8 kernel (load(..., int8_float_convs=...))
    int8_nodes: list[str] = field(default_factory=list)  # those convolutions, their input range and where it is from
    int8_skipped: list[str] = field(default_factory=list)  # with int8 asked for: the float convs kept float, and why
    channels_last: list[str] = field(default_factory=list)  # float values kept NHWC in memory between layers
    channels_first: list[str] = field(default_factory=list)  # values that could be NHWC but stay NCHW, and why
    absorbed_nodes: int = 0
    ops: dict[str, int] = field(default_factory=dict)


@dataclass
class Program:
    """What the executor runs: the steps in order, the graph they came from, and the report."""

    steps: list[Step]
    graph: Graph
    report: CompileReport
