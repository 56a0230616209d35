"""`verify`: run an ONNX file and the torch module it came from on the same inputs."""

from __future__ import annotations

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
