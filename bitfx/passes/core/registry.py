"""Registered passes by name, and building a pass from a name and parameters with checks."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any

from bitfx.errors import PassConfigError
from bitfx.passes.core.base import Pass
from bitfx.passes.core.selection import LayerSelection

_REGISTRY: dict[str, type[Pass]] = {}


def register_pass(cls: type[Pass]) -> type[Pass]:
    """Class decorator: make a dataclass `Pass` available by its `name`."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls.__name__} must be a dataclass to be registered")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"pass name {cls.name!r} is already registered by {_REGISTRY[cls.name].__name__}")
    _REGISTRY[cls.name] = cls
    return cls


def available_passes() -> dict[str, type[Pass]]:
    """Registered pass classes by name."""
    return dict(sorted(_REGISTRY.items()))


def create_pass(name: str, params: dict[str, Any] | None = None) -> Pass:
    """Instantiate the pass `name` with `params`, rejecting unknown names, unknown parameters
    and values of the wrong type, each with the valid choices listed."""
    if name not in _REGISTRY:
        raise PassConfigError(f"unknown pass {name!r}; available passes: {', '.join(available_passes()) or 'none'}")
    cls = _REGISTRY[name]
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    params = dict(params or {})
    unknown = sorted(set(params) - set(fields))
    if unknown:
        valid = ", ".join(f"{n}: {_type_text(hints[n])}" for n in fields) or "none"
        raise PassConfigError(
            f"pass {name!r} has no parameter {', '.join(map(repr, unknown))}; its parameters are: {valid}"
        )
    values = {key: _coerce(name, key, value, hints[key]) for key, value in params.items()}
    return cls(**values)


def _coerce(pass_name: str, key: str, value: Any, annotation: Any) -> Any:
    """Check `value` against the field's annotation (a float must be finite, a bool is not a
    number); convert the few safe cases (int → float, dict → LayerSelection, list → tuple). A selection
    dict is checked here and left for the pass, which fills its missing keys from the field's default
    (`Pass.__post_init__`)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is LayerSelection:
        selection = LayerSelection.from_config(value)
        return value if isinstance(value, dict) else selection
    if origin is typing.Literal:
        if value not in args:
            raise PassConfigError(f"pass {pass_name!r}: {key}={value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(pass_name, key, value, option)
            except PassConfigError as error:
                errors.append(str(error))
        raise PassConfigError(
            errors[0]
            if len(errors) == 1
            else f"pass {pass_name!r}: {key}={value!r} does not fit {_type_text(annotation)}"
        )
    if origin in (tuple, list) and isinstance(value, (list, tuple)):
        return tuple(value) if origin is tuple else list(value)
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is float and isinstance(value, float) and not math.isfinite(value):
        raise PassConfigError(f"pass {pass_name!r}: {key}={value!r} should be a finite number")
    if isinstance(annotation, type) and annotation is not typing.Any:
        if not isinstance(value, annotation) or (annotation is int and isinstance(value, bool)):
            raise PassConfigError(f"pass {pass_name!r}: {key}={value!r} should be {_type_text(annotation)}")
    return value


def _type_text(annotation: Any) -> str:
    if typing.get_origin(annotation) is typing.Literal:
        return " | ".join(map(repr, typing.get_args(annotation)))
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")
