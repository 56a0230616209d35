"""Run a module for inspection or checking without side effects on its state."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

Inputs = torch.Tensor | Sequence[torch.Tensor]


def as_inputs(inputs: Inputs) -> tuple[torch.Tensor, ...]:
    """Model inputs as a tuple: a single tensor becomes a 1-tuple; non-tensors are an error."""
    values = (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)
    for position, value in enumerate(values):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"model input {position} is a {type(value).__name__}, not a tensor")
    return values


def batch_inputs(batch: Any) -> tuple[Any, ...]:
    """The model inputs of a data batch: a tensor is the one input; an `(inputs, labels)` tuple gives
    its inputs, a tensor or, for a model of several inputs, a tuple of tensors."""
    inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
    return tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode and restore each one's own training flag afterwards.

    Running in train mode would update BatchNorm statistics, so every check and shape
    propagation in bitfx runs through this.
    """
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, training in flags:
            m.training = training


@contextmanager
def preserved_state(module: nn.Module) -> Iterator[nn.Module]:
    """Undo, on exit, whatever running `module` did to its parameters and buffers: in-place
    updates (BatchNorm statistics in train mode, counters a forward increments) are copied
    back, and a tensor attribute the forward replaced is put back as the original object."""
    saved = [
        (table, dict(table), {name: t.detach().clone() for name, t in table.items() if _initialized(t)})
        for m in module.modules()
        for table in (m._parameters, m._buffers)
    ]
    try:
        yield module
    finally:
        with torch.no_grad():
            for table, objects, values in saved:
                table.clear()
                table.update(objects)
                for name, value in values.items():
                    table[name].copy_(value)


def _initialized(tensor: torch.Tensor | None) -> bool:
    """False for a missing tensor and for a lazy module's parameter not materialised yet (its first
    forward materialises it in place, as any first call would; there is no value to restore)."""
    return tensor is not None and not isinstance(tensor, nn.parameter.UninitializedTensorMixin)


def run_eval(module: nn.Module, inputs: Inputs) -> Any:
    """The module's outputs in eval mode, without autograd and without touching its state."""
    with eval_mode(module), torch.no_grad():
        return module(*as_inputs(inputs))


def run_eval_float64(module: nn.Module, inputs: Inputs) -> Any:
    """The outputs of a float64 copy of `module` on float64 copies of the floating-point
    `inputs` (eval mode, no autograd): the reference against which float32 rounding is measured."""
    double = copy.deepcopy(module).double()
    values = tuple(t.double() if t.is_floating_point() else t for t in as_inputs(inputs))
    return run_eval(double, values)


def flatten_outputs(outputs: Any) -> list[torch.Tensor]:
    """The tensors of a (possibly nested) model output, in a stable order."""
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    if isinstance(outputs, dict):
        return [t for key in sorted(outputs) for t in flatten_outputs(outputs[key])]
    if isinstance(outputs, (list, tuple)):
        return [t for item in outputs for t in flatten_outputs(item)]
    return []


def named_outputs(outputs: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """The leaves of a (possibly nested) model output with their paths, in the order torch
    flattens them (dict insertion order, then sequence order): `{"a": x, "b": (y, z)}` gives
    `[("a", x), ("b.0", y), ("b.1", z)]`, a bare tensor `[("", x)]`. Leaves are anything but a
    dict, list or tuple (tensors, or the fx nodes of a graph's output); None entries are left out."""
    if isinstance(outputs, dict):
        items = [(str(key), value) for key, value in outputs.items()]
    elif isinstance(outputs, (list, tuple)):
        items = [(str(index), value) for index, value in enumerate(outputs)]
    else:
        return [] if outputs is None else [(prefix, outputs)]
    return [leaf for key, value in items for leaf in named_outputs(value, f"{prefix}.{key}" if prefix else key)]


@dataclass(frozen=True)
class OutputError:
    """How far one output is from its reference.

    `max_rel_error` is max|actual − expected| / max|expected|: the worst error relative to
    the output's scale, which stays meaningful where individual elements are near zero.
    """

    max_abs_error: float
    max_rel_error: float


def compare_outputs(expected: Any, actual: Any) -> list[OutputError]:
    """Per-output errors of `actual` against `expected` (tensors, arrays or nested outputs).

    A NaN or ±Inf in `actual` where `expected` does not hold the same value is an infinite
    error, so no tolerance accepts it.
    """
    expected_list, actual_list = _as_arrays(expected), _as_arrays(actual)
    if len(expected_list) != len(actual_list):
        raise ValueError(f"{len(actual_list)} outputs where {len(expected_list)} were expected")
    errors = []
    for ref, out in zip(expected_list, actual_list):
        if ref.shape != out.shape:
            raise ValueError(f"output shape {tuple(out.shape)} where {tuple(ref.shape)} was expected")
        abs_error = _max_abs_difference(ref, out.astype(np.float64))
        finite = ref[np.isfinite(ref)]
        scale = float(np.max(np.abs(finite))) if finite.size else 0.0
        errors.append(OutputError(abs_error, abs_error / scale if scale > 0 else abs_error))
    return errors


def _max_abs_difference(ref: np.ndarray, out: np.ndarray) -> float:
    """max|out − ref| over the elements; non-finite elements count 0 when both sides hold the
    same value (NaN in both, or the same infinity) and infinity otherwise."""
    if not ref.size:
        return 0.0
    finite = np.isfinite(ref) & np.isfinite(out)
    if not finite.all():
        same = (np.isnan(ref) & np.isnan(out)) | (ref == out)
        if not (finite | same).all():
            return float("inf")
    return float(np.max(np.abs(out[finite] - ref[finite]), initial=0.0))


def _as_arrays(outputs: Any) -> list[np.ndarray]:
    if isinstance(outputs, np.ndarray):
        return [outputs.astype(np.float64)]
    if isinstance(outputs, (list, tuple)) and outputs and all(isinstance(o, np.ndarray) for o in outputs):
        return [o.astype(np.float64) for o in outputs]
    return [t.detach().double().numpy() for t in flatten_outputs(outputs)]
