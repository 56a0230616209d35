"""Resolving what the command line names: `package.module:factory` specs and shapes."""

from __future__ import annotations

import os
import sys
from typing import Any

from torch import nn

from bitfx.errors import ModelSpecError
from bitfx.specs import load_callable


def import_from_cwd() -> None:
    """Make modules in the current directory importable, as `python -m` does (no PYTHONPATH needed)."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def build_model(spec: str) -> nn.Module:
    """Call the factory named by `spec` with no arguments and check it returns a module."""
    factory = load_callable(spec, "model")
    try:
        model = factory()
    except (Exception, SystemExit) as error:
        raise ModelSpecError(
            f"model factory {spec!r} raised {type(error).__name__}: {error} (it is called with no arguments)"
        ) from error
    if not isinstance(model, nn.Module):
        raise ModelSpecError(f"model spec {spec!r} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def parse_shape(text: str) -> tuple[int, ...]:
    """`1,3,32,32` → (1, 3, 32, 32); anything else is a clear error."""
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        shape = ()
    if not shape or any(d <= 0 for d in shape):
        raise ModelSpecError(f"bad input shape {text!r}: expected comma-separated positive integers such as 1,3,32,32")
    return shape


def input_shape_of(model: nn.Module, given: str | None, model_spec: str) -> tuple[int, ...]:
    """The shape from `--input-shape`, else the model's `example_input_shape` attribute."""
    if given is not None:
        return parse_shape(given)
    shape = getattr(model, "example_input_shape", None)
    if shape is None:
        raise ModelSpecError(f"cannot tell the input shape of {model_spec!r}: pass --input-shape N,C,H,W")
    return tuple(shape)


def first_input(batch: Any) -> Any:
    """The model input of a batch: the batch itself, or its first element for (inputs, labels)."""
    return batch[0] if isinstance(batch, (tuple, list)) else batch
