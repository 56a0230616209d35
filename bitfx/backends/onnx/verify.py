"""`verify`: run an ONNX file and the torch module it came from on the same inputs.

A lowering style whose files need another check (the `qdq` style compares quantizer codes)
registers it with `register_verifier`; `verifier_for(style)` returns it, else `verify`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from bitfx.backends.onnx.session import run_session, session
from bitfx.ir.execution import Inputs, OutputError, as_inputs, compare_outputs, run_eval

DEFAULT_VERIFY_RTOL = 1e-4


@dataclass(frozen=True)
class VerifyReport:
    """Per-output errors of onnxruntime against torch (eval mode), the worst of them, and
    whether the worst relative error is within `rtol`."""

    outputs: list[OutputError]
    rtol: float

    @property
    def max_abs_error(self) -> float:
        return max((o.max_abs_error for o in self.outputs), default=0.0)

    @property
    def max_rel_error(self) -> float:
        return max((o.max_rel_error for o in self.outputs), default=0.0)

    @property
    def ok(self) -> bool:
        return self.max_rel_error <= self.rtol

    def describe(self) -> str:
        """One line for a terminal."""
        verdict = "ok" if self.ok else "FAILED"
        return f"max abs error {self.max_abs_error:.3g}, max rel error {self.max_rel_error:.3g} (tolerance {self.rtol:g}): {verdict}"

    def to_json(self) -> dict[str, Any]:
        return {
            "max_abs_error": self.max_abs_error,
            "max_rel_error": self.max_rel_error,
            "ok": self.ok,
            "rtol": self.rtol,
            "outputs": [{"max_abs_error": o.max_abs_error, "max_rel_error": o.max_rel_error} for o in self.outputs],
        }


def verify(path: str | Path, module: nn.Module, inputs: Inputs, *, rtol: float = DEFAULT_VERIFY_RTOL) -> VerifyReport:
    """Compare onnxruntime on `path` with `module` in eval mode on `inputs`."""
    inputs = as_inputs(inputs)
    expected = run_eval(module, inputs)
    actual = run_session(session(path), [t.detach().numpy() for t in inputs])
    return VerifyReport(compare_outputs(expected, actual), rtol)


Verifier = Callable[..., VerifyReport]
_VERIFIERS: dict[str, Verifier] = {}


def register_verifier(lowering: str) -> Callable[[Verifier], Verifier]:
    """Decorator: `fn(path, module, inputs, *, rtol) -> VerifyReport` checks files of the style `lowering`."""

    def register(fn: Verifier) -> Verifier:
        _VERIFIERS[lowering] = fn
        return fn

    return register


def verifier_for(lowering: str) -> Verifier:
    """The check for files written by the lowering style `lowering` (`verify` unless one is registered)."""
    return _VERIFIERS.get(lowering, verify)
