"""The preserved-outputs check: is a pass's output error within the float32 noise of its input graph?

A pass that claims to preserve outputs (`Pass.preserves_outputs`) is judged on the example
inputs by this rule:

- the graph before the pass runs in float32 (`before`) and, on a float64 copy, in float64
  (`exact`); the *noise floor* is the max relative error of `before` against `exact`: what
  float32 rounding alone costs on this graph and these inputs (deep networks reach 1e-5 and
  more with no error at all);
- the *error* of the pass is the max relative error of the rewritten graph's float32 outputs
  against `exact`;
- the pass passes when error ≤ rtol + NOISE_MULTIPLE × noise floor.

A NaN or Inf in an output where the reference has none is an infinite error and always fails.
When the graph cannot run in float64 (a module that only supports float32), the error is
measured against `before` and the noise floor is unknown (None): the plain `rtol` applies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bitfx.ir.execution import compare_outputs

NOISE_MULTIPLE = 4.0


@dataclass(frozen=True)
class OutputCheck:
    """The measured error of one pass, the noise floor it was judged against, and the verdict."""

    error: float
    noise_floor: float | None
    rtol: float

    @property
    def tolerance(self) -> float:
        return self.rtol + NOISE_MULTIPLE * (self.noise_floor or 0.0)

    @property
    def passed(self) -> bool:
        return self.error <= self.tolerance

    def describe(self) -> str:
        floor = self.noise_floor
        noise = "" if floor is None else f" + {NOISE_MULTIPLE:g} × float32 noise floor {floor:.3g}"
        return f"max relative error {self.error:.3g} > tolerance {self.rtol:g}{noise}"


def check_outputs(before: Any, exact: Any | None, after: Any, rtol: float) -> OutputCheck:
    """Judge `after` (float32 outputs of the rewritten graph) against the graph before the pass:
    its float32 outputs `before` and its float64 outputs `exact` (None when unavailable)."""
    if exact is None:
        return OutputCheck(_worst(before, after), None, rtol)
    return OutputCheck(_worst(exact, after), _worst(exact, before), rtol)


def _worst(expected: Any, actual: Any) -> float:
    return max((e.max_rel_error for e in compare_outputs(expected, actual)), default=0.0)
