"""A step is one unit the executor runs: it reads values by name and writes values by name.

`eager(inputs)` computes outputs into new arrays (the first run for an input shape, which also
tells the planner every shape); `bind(inputs, outputs)` returns a zero-argument callable that
writes into fixed, planned buffers (every later run). A view step (reshape and friends) only
re-labels its input's memory, so it has no buffer of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from bitfx.backends.packed.call_table import CallSequence
from bitfx.backends.packed.kernels import PackedTensor

Value = np.ndarray | PackedTensor
Compute = Callable[[Sequence[np.ndarray], Sequence[np.ndarray] | None], Sequence[np.ndarray]]


class Step:
    """Base class: `name` says where it came from (node names) for errors and reports."""

    is_view = False

    def __init__(self, name: str, inputs: Sequence[str], outputs: Sequence[str]) -> None:
        self.name, self.inputs, self.outputs = name, list(inputs), list(outputs)

    def eager(self, inputs: Sequence[Value]) -> list[Value]:
        raise NotImplementedError

    def bind(self, inputs: Sequence[Value], outputs: Sequence[Value]) -> Callable[[], None]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name}: {', '.join(self.inputs)} -> {', '.join(self.outputs)})"


class NumpyStep(Step):
    """A standard op computed with numpy: `compute(inputs, outputs_or_None)` returns the outputs,
    writing into `outputs` when they are given."""

    def __init__(
        self, name: str, inputs: Sequence[str], outputs: Sequence[str], compute: Compute, *, is_view: bool = False
    ) -> None:
        super().__init__(name, inputs, outputs)
        self.compute = compute
        self.is_view = is_view

    def eager(self, inputs: Sequence[Value]) -> list[Value]:
        return [np.asarray(v) for v in self.compute(inputs, None)]

    def bind(self, inputs: Sequence[Value], outputs: Sequence[Value]) -> Callable[[], None]:
        compute = self.compute
        return lambda: compute(inputs, outputs)


def kernel_call(*calls: Callable[[], None]) -> Callable[[], None]:
    """One callable running several bound calls in order (a plan still sees each kernel call in it)."""
    return calls[0] if len(calls) == 1 else CallSequence(calls)
