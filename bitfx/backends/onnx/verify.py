"""`verify`: run an ONNX file and the torch module it came from on the same inputs.

Outputs are paired by name (`paired_outputs`): a module returning a dict or a nested tuple is
compared output by output with the ONNX outputs `export` named after them.

A lowering style whose files need another check registers it with `register_verifier`;
`verifier_for(style)` returns it, else `verify`. The `qdq` style has one (`verify_qdq`):

Running both end to end cannot match bit for bit: onnxruntime accumulates convolutions in
integers (or its own float kernels) and torch in float32, so a value that lands within
about 1e-6 of a rounding boundary can round the other way, and that one-step difference then
spreads through the layers after it. The check therefore compares quantizer by quantizer,
with the same inputs on both sides:

1. onnxruntime runs the file, fully optimized (the fused integer kernels), with the codes of
   every quantizer as extra outputs (found through the `bitfx.quantizer` metadata);
2. torch runs the module with every `ActQuant` fed onnxruntime's codes of the quantizers
   before it (each one's output replaced by onnxruntime's codes times its step), and each
   quantizer's own codes are compared with onnxruntime's: they must differ by at most one
   step (the claim "within one quantization step"), and only at rounding ties;
3. the outputs computed from those shared codes must agree within `rtol` (what follows the
   last quantizers is float and must match as in the `float` lowering).

The end-to-end (free-running) difference is reported too, for information.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from bitfx.backends.onnx.qdq import QUANTIZER_KEY, ZERO_POINT_KEY
from bitfx.backends.onnx.session import load_model, run_session, session
from bitfx.errors import LoweringError
from bitfx.ir.execution import Inputs, OutputError, as_inputs, compare_outputs, eval_mode, named_outputs, run_eval
from bitfx.ir.quant import ActQuant

DEFAULT_VERIFY_RTOL = 1e-4
MAX_CODE_STEPS = 1


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
        return (
            f"max abs error {self.max_abs_error:.3g}, max rel error {self.max_rel_error:.3g} "
            f"(tolerance {self.rtol:g}): {verdict}"
        )

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
    sess = session(path)
    actual = run_session(sess, [t.detach().numpy() for t in inputs])
    names = [spec.name for spec in sess.get_outputs()]
    return VerifyReport(compare_outputs(*paired_outputs(run_eval(module, inputs), names, actual)), rtol)


def paired_outputs(
    expected: Any, names: list[str], actual: list[np.ndarray]
) -> tuple[list[torch.Tensor], list[np.ndarray]]:
    """The module's output tensors and the ONNX outputs (`names`, `actual`) in matching order.

    A single output pairs with a single output. Otherwise the module's outputs are named by
    their path (`bitfx.ir.execution.named_outputs`, as `export` names the file's outputs) and
    paired by name, whatever the order; a different count or different names is an error.
    """
    named = named_outputs(expected)
    ours = [name for name, _ in named]
    if len(named) != len(actual):
        raise LoweringError(
            f"the module returns {len(named)} outputs {ours} and the ONNX file {len(actual)} {names}; "
            "was the file exported from this module?"
        )
    if len(named) == 1:
        return [named[0][1]], list(actual)
    if sorted(ours) != sorted(names):
        raise LoweringError(
            f"the module's outputs {ours} do not match the ONNX file's outputs {names} by name; bitfx.export "
            "names a file's outputs after their place in the module's output (dict keys, tuple positions)"
        )
    by_name = dict(zip(names, actual))
    return [tensor for _, tensor in named], [by_name[name] for name in ours]


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


@dataclass(frozen=True)
class QuantizerCheck:
    """How one quantizer's codes in onnxruntime compare with torch's, given the same inputs."""

    name: str
    max_code_diff: int
    mismatched: int
    elements: int

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "max_code_diff": self.max_code_diff,
            "mismatched": self.mismatched,
            "elements": self.elements,
        }


@dataclass(frozen=True)
class ForcedVerifyReport(VerifyReport):
    """A check that feeds torch what onnxruntime computed inside the file (codes, layer inputs):
    `outputs` are the errors from those same inputs, `free_running` the end-to-end errors."""

    free_running: tuple[OutputError, ...] = ()

    @property
    def free_running_error(self) -> float:
        """The worst end-to-end relative error."""
        return max((o.max_rel_error for o in self.free_running), default=0.0)

    def free_running_json(self) -> dict[str, float]:
        return {
            "max_abs_error": max((o.max_abs_error for o in self.free_running), default=0.0),
            "max_rel_error": self.free_running_error,
        }


@dataclass(frozen=True)
class QuantizedVerifyReport(ForcedVerifyReport):
    """`outputs`: errors of onnxruntime's outputs against torch fed the same codes;
    `quantizers`: per-quantizer code agreement; `free_running`: end-to-end errors."""

    quantizers: tuple[QuantizerCheck, ...] = ()

    @property
    def max_code_diff(self) -> int:
        return max((q.max_code_diff for q in self.quantizers), default=0)

    @property
    def ok(self) -> bool:
        return self.max_code_diff <= MAX_CODE_STEPS and self.max_rel_error <= self.rtol

    def describe(self) -> str:
        mismatched = sum(q.mismatched for q in self.quantizers)
        codes = sum(q.elements for q in self.quantizers)
        verdict = "ok" if self.ok else "FAILED"
        return (
            f"{len(self.quantizers)} quantizers, "
            f"codes within {self.max_code_diff} step(s) of torch given the same inputs "
            f"({mismatched:,} of {codes:,} differ, at rounding ties; allowed: {MAX_CODE_STEPS}); "
            f"outputs from the same codes: max rel error {self.max_rel_error:.3g} (tolerance {self.rtol:g}); "
            f"end to end: max rel error {self.free_running_error:.3g}: {verdict}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            **super().to_json(),
            "criterion": (
                f"every quantizer's codes within {MAX_CODE_STEPS} step of torch given the same input codes, "
                "and outputs from those codes within rtol"
            ),
            "max_code_diff": self.max_code_diff,
            "mismatched_codes": sum(q.mismatched for q in self.quantizers),
            "codes": sum(q.elements for q in self.quantizers),
            "quantizers": [q.to_json() for q in self.quantizers],
            "free_running": self.free_running_json(),
        }


@register_verifier("qdq")
def verify_qdq(
    path: str | Path, module: nn.Module, inputs: Inputs, *, rtol: float = DEFAULT_VERIFY_RTOL
) -> QuantizedVerifyReport:
    """Check the `qdq` file at `path` against the PAMS-quantized `module` (see the module docstring)."""
    inputs = as_inputs(inputs)
    arrays = [t.detach().numpy() for t in inputs]
    model = load_model(path)
    codes_by_name = _quantizer_outputs(model)
    quantizers = {name: m for name, m in module.named_modules() if isinstance(m, ActQuant)}
    codes_by_name.update(_merged_twins(module, set(quantizers) - set(codes_by_name), codes_by_name))
    missing = sorted(set(quantizers) - set(codes_by_name))
    if missing:
        raise LoweringError(
            f"{str(path)!r} has no codes for the quantizers {missing}; "
            "was it written by the 'qdq' lowering from this module?"
        )
    n_outputs = len(model.graph.output)
    tensors = list(dict.fromkeys(tensor for tensor, _ in codes_by_name.values()))
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe.onnx"
        onnx.save(_with_code_outputs(model, tensors), str(probe))
        results = run_session(session(probe), arrays)
    outputs, by_tensor = results[:n_outputs], dict(zip(tensors, results[n_outputs:]))
    codes = {name: by_tensor[tensor] for name, (tensor, _) in codes_by_name.items()}
    names = [value.name for value in model.graph.output]
    free_running = compare_outputs(*paired_outputs(run_eval(module, inputs), names, outputs))
    zero_points = {name: zero for name, (_, zero) in codes_by_name.items()}
    forced, checks = _run_with_codes(module, inputs, quantizers, codes, zero_points)
    same_codes = compare_outputs(*paired_outputs(forced, names, outputs))
    return QuantizedVerifyReport(same_codes, rtol, free_running=tuple(free_running), quantizers=tuple(checks))


def _quantizer_outputs(model: onnx.ModelProto) -> dict[str, tuple[str, int]]:
    """quantizer module name → (name of its code tensor, zero point), from the node metadata."""
    found = {}
    for node in model.graph.node:
        metadata = {entry.key: entry.value for entry in node.metadata_props}
        if QUANTIZER_KEY in metadata:
            found[metadata[QUANTIZER_KEY]] = (node.output[0], int(metadata[ZERO_POINT_KEY]))
    return found


def _merged_twins(
    module: nn.Module, absent: set[str], codes_by_name: dict[str, tuple[str, int]]
) -> dict[str, tuple[str, int]]:
    """Codes for quantizers the exporter merged away: when two quantizers with equal state quantize
    equal computations (the same parameter-free module type and settings, on the same inputs), the
    exporter's common-subexpression elimination keeps one; the other's codes are the kept one's."""
    if not absent or not isinstance(module, torch.fx.GraphModule):
        return {}
    nodes = {node.target: node for node in module.graph.nodes if node.op == "call_module"}
    found = {}
    for name in absent:
        twin = next(
            (
                kept
                for kept in codes_by_name
                if name in nodes and kept in nodes and _equal_quantizers(module, nodes[name], nodes[kept])
            ),
            None,
        )
        if twin is not None:
            found[name] = codes_by_name[twin]
    return found


def _equal_quantizers(module: torch.fx.GraphModule, a: torch.fx.Node, b: torch.fx.Node) -> bool:
    """True when quantizer nodes `a` and `b` compute the same codes: equal state, equal inputs."""
    state_a, state_b = module.get_submodule(a.target).state_dict(), module.get_submodule(b.target).state_dict()
    if state_a.keys() != state_b.keys() or not all(torch.equal(state_a[k], state_b[k]) for k in state_a):
        return False
    x, y = a.args[0], b.args[0]
    if x is y:
        return True
    if not (isinstance(x, torch.fx.Node) and isinstance(y, torch.fx.Node)) or x.op != "call_module" or y.op != x.op:
        return False
    first, second = module.get_submodule(x.target), module.get_submodule(y.target)
    stateless = not any(True for _ in first.parameters()) and not any(True for _ in first.buffers())
    same_call = x.args == y.args and x.kwargs == y.kwargs
    return stateless and type(first) is type(second) and repr(first) == repr(second) and same_call


def _with_code_outputs(model: onnx.ModelProto, tensors: list[str]) -> onnx.ModelProto:
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for tensor in tensors:
        probe.graph.output.append(onnx.helper.make_tensor_value_info(tensor, onnx.TensorProto.UINT8, None))
    return probe


def _run_with_codes(
    module: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    quantizers: dict[str, ActQuant],
    codes: dict[str, np.ndarray],
    zero_points: dict[str, int],
) -> tuple[Any, list[QuantizerCheck]]:
    """Run `module` with each quantizer's output replaced by onnxruntime's codes; compare codes."""
    checks: list[QuantizerCheck] = []
    names = {id(m): name for name, m in quantizers.items()}

    def force(quantizer: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
        name = names[id(quantizer)]
        theirs = torch.from_numpy(codes[name].astype(np.int64) - zero_points[name]).reshape(output.shape)
        ours = quantizer.codes(args[0]).to(torch.int64)
        diff = (ours - theirs).abs()
        checks.append(QuantizerCheck(name, int(diff.max()) if diff.numel() else 0, int((diff > 0).sum()), diff.numel()))
        return theirs.to(output.dtype) * quantizer.scale()

    handles = [q.register_forward_hook(force) for q in quantizers.values()]
    try:
        with eval_mode(module), torch.no_grad():
            outputs = module(*inputs)
    finally:
        for handle in handles:
            handle.remove()
    return outputs, checks
