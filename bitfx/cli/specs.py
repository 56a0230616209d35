"""Resolving what the command line names: `package.module:factory` specs and shapes."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from typing import Any

from torch import nn

from bitfx.errors import ModelSpecError


def import_from_cwd() -> None:
    """Make modules in the current directory importable, as `python -m` does (no PYTHONPATH needed)."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def load_callable(spec: str, what: str) -> Callable[..., Any]:
    """The callable named by `package.module:name`; `what` ("model", "data") goes into errors."""
    module_name, colon, attr = spec.partition(":")
    if not colon or not module_name or not attr:
        raise ModelSpecError(f"{what} spec {spec!r} must look like package.module:function, e.g. bitfx.zoo:resnet20")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ModelSpecError(f"{what} spec {spec!r}: cannot import module {module_name!r} ({error})") from error
    except (Exception, SystemExit) as error:
        raise ModelSpecError(
            f"{what} spec {spec!r}: importing module {module_name!r} raised {type(error).__name__}: {error}"
        ) from error
    target = getattr(module, attr, None)
    if not callable(target):
        public = sorted(n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n)))
        raise ModelSpecError(
            f"{what} spec {spec!r}: module {module_name!r} has no function {attr!r}; it defines {public}"
        )
    return target


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
