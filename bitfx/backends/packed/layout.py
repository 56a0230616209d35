"""Which float activations the executor keeps channels-last (NHWC memory) between layers.

A channels-last value is a numpy array with the logical NCHW shape and NHWC memory
(`kernels.empty_channels_last`): the kernels that know the layout read a pixel's channels
contiguously (packing is a contiguous compare, the binary convolution's float output a contiguous
store, no transposes). A value can be channels-last when its producer can write it so (a binary
convolution's float output, a float convolution fused with its max pool: the stem) and every reader
reads it natively: packing, a binary convolution's residual, or the global average pool (the head of a
classifier, so a network's last stage stays channels-last too). Any other reader (a numpy op, a
float kernel) keeps the value NCHW, so it computes exactly what it did before. A binary
convolution reads its residual in its output's layout, so the two are decided together (a residual
of the other layout would be converted on every run): the values linked by residuals are kept
channels-last only if each of them can be.
Model outputs are returned as C-contiguous NCHW arrays (executor.py), converted once at the boundary.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from bitfx.backends.packed.kernel_steps import BinaryConvStep, FloatConvStep, GlobalAvgPoolStep, PackStep
from bitfx.backends.packed.steps import Step


def writes_channels_last(step: Step) -> bool:
    """Whether `step` can write its (4-D float) output channels-last."""
    if isinstance(step, BinaryConvStep):
        return step.packed_out is None and not step.gemm
    return isinstance(step, FloatConvStep) and step.pool is not None


def reads_channels_last(step: Step, position: int) -> bool:
    """Whether `step` reads its input at `position` correctly and without a conversion when it is channels-last."""
    if isinstance(step, (PackStep, GlobalAvgPoolStep)):
        return True
    return isinstance(step, BinaryConvStep) and position == 1  # the residual


def choose_channels_last(steps: Sequence[Step]) -> tuple[list[str], list[str]]:
    """Mark the producers of the values kept channels-last (`step.channels_last = True`); return those
    values, and for each value a producer could write channels-last but that stays NCHW, why."""
    readers: dict[str, list[tuple[Step, int]]] = defaultdict(list)
    for step in steps:
        for position, name in enumerate(step.inputs):
            if name:
                readers[name].append((step, position))
    producers = {step.outputs[0]: step for step in steps if writes_channels_last(step)}
    why_not = {}
    for value in producers:
        blocking = [reader for reader, position in readers[value] if not reads_channels_last(reader, position)]
        if blocking:
            why_not[value] = f"read by {blocking[0].name}, which needs NCHW"
    linked = _residual_links(steps)
    chosen, refused = [], []
    for value, step in producers.items():
        reason = why_not.get(value)
        if reason is None:
            blocked = next((other for other in linked.get(value, [value]) if other in why_not), None)
            if blocked is not None:
                reason = f"its residual link with {blocked!r}, which stays NCHW"
            elif any(other not in producers for other in linked.get(value, [value])):
                reason = "a residual link with a value whose producer writes NCHW only"
        if reason is None:
            step.channels_last = True
            chosen.append(value)
        else:
            refused.append(f"{value}: {reason}")
    return chosen, refused


def _residual_links(steps: Sequence[Step]) -> dict[str, list[str]]:
    """For every value that is a binary convolution's float output or residual: all the values linked to it
    through residuals (output ~ residual, transitively), itself included."""
    parent: dict[str, str] = {}

    def root(name: str) -> str:
        parent.setdefault(name, name)
        while parent[name] != name:
            name = parent[name]
        return name

    for step in steps:
        if isinstance(step, BinaryConvStep) and step.packed_out is None and len(step.inputs) > 1:
            parent[root(step.inputs[1])] = root(step.outputs[0])
    groups: dict[str, list[str]] = defaultdict(list)
    for name in list(parent):
        groups[root(name)].append(name)
    return {name: groups[root(name)] for name in parent}
