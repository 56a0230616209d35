"""Which float activations the executor keeps channels-last (NHWC memory) between layers.

A channels-last value is a numpy array with the logical NCHW shape and NHWC memory
(`kernels.empty_channels_last`): the kernels that know the layout read a pixel's channels
contiguously (packing is a contiguous compare, the binary convolution's float output a contiguous
store, no transposes). A value is kept channels-last when its producer can write it so (a binary
convolution's float output, a float convolution fused with its max pool: the stem) and every reader
reads it natively: packing, or a binary convolution's residual (read in that convolution's output
layout; a residual of the other layout is converted into a scratch copy on each run). Any other
reader (a numpy op, a float kernel) keeps the value NCHW, so it computes exactly what it did before.
Model outputs are returned as C-contiguous NCHW arrays (executor.py), converted once at the boundary.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from bitfx.backends.packed.kernel_steps import BinaryConvStep, FloatConvStep, PackStep
from bitfx.backends.packed.steps import Step


def writes_channels_last(step: Step) -> bool:
    """Whether `step` can write its (4-D float) output channels-last."""
    if isinstance(step, BinaryConvStep):
        return step.packed_out is None and not step.gemm
    return isinstance(step, FloatConvStep) and step.pool is not None


def reads_channels_last(step: Step, position: int) -> bool:
    """Whether `step` reads its input at `position` correctly and without a conversion when it is channels-last."""
    if isinstance(step, PackStep):
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
    chosen, refused = [], []
    for step in steps:
        if not writes_channels_last(step):
            continue
        value = step.outputs[0]
        blocking = [reader for reader, position in readers[value] if not reads_channels_last(reader, position)]
        if blocking:
            refused.append(f"{value}: read by {blocking[0].name}, which needs NCHW")
            continue
        step.channels_last = True
        chosen.append(value)
    return chosen, refused
