"""Resolving a `package.module:name` spec to the callable it names: the command line's model and
data specs, and the model factory a checkpoint records."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from bitfx.errors import ModelSpecError


def load_callable(spec: str, what: str) -> Callable[..., Any]:
    """The callable named by `package.module:name`; `what` ("model", "data") goes into errors."""
    module_name, colon, attr = spec.partition(":")
    if not colon or not module_name or not attr:
        raise ModelSpecError(f"{what} spec {spec!r} must look like package.module:function, e.g. bitfx.zoo:resnet20")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ModelSpecError(
            f"{what} spec {spec!r}: cannot import {module_name!r} ({error}); put it on the path"
        ) from error
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


__all__ = ["load_callable"]
