"""What `--help` and `bitfx passes` list: every pass with each parameter's type and default,
the syntax of layer selections, and the lowering styles."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from bitfx.backends.onnx import available_lowerings
from bitfx.backends.onnx.lowerings import get_lowering
from bitfx.passes import LayerSelection, available_passes

SELECTION_SYNTAX = """\
Parameters are written name(key=value, ...); values are Python literals, a plain word is a string
(also inside a literal: {by_name: {fc: false}} is {'by_name': {'fc': False}}).
A layer selection (parameters of type LayerSelection, e.g. binarize's `layers`, rank_prune's `rates`)
is a bare value for every layer (layers=false, rates=0.25) or a dict with the keys
  default   the value for every layer not matched below
  by_type   {'Conv2d': value}: by module class name (the most specific class wins)
  by_regex  {'layer1\\\\..*': value}: full match on the qualified module name (the last match wins)
  by_name   {'fc': value}: by exact qualified module name (strongest)
Keys left out keep the pass's own default, so binarize(layers={'by_name': {'fc': False}}) binarizes
every default layer except fc; write 'default' to replace it: layers={'default': False, 'by_name': {'fc': True}}.
Text that starts like a literal but does not parse (e.g. an unquoted dotted name) is an error."""


def passes_text() -> str:
    """Every registered pass, its one-line description and its parameters, then the selection syntax."""
    blocks = []
    for name, cls in available_passes().items():
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        hints = typing.get_type_hints(cls)
        lines = [f"{name}  {doc}"]
        for spec in dataclasses.fields(cls):
            if spec.init:
                lines.append(f"    {spec.name}: {_type_text(hints[spec.name])} = {_default_text(spec)}")
        blocks.append("\n".join(lines))
    return "\n".join(blocks) + "\n\n" + SELECTION_SYNTAX


def lowerings_text() -> str:
    """One line per lowering style with the first line of its description."""
    return "\n".join(f"  {name:<7} {_first_line(get_lowering(name).__doc__)}" for name in available_lowerings())


def _first_line(doc: str | None) -> str:
    """The first sentence of the first line of `doc`."""
    line = (doc or "").strip().splitlines()[0] if doc else ""
    return line.split(". ")[0].rstrip(".") + "." if line else ""


def _type_text(annotation: Any) -> str:
    if annotation is LayerSelection:
        return "LayerSelection"
    if typing.get_origin(annotation) is typing.Literal:
        return " | ".join(map(repr, typing.get_args(annotation)))
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _default_text(spec: dataclasses.Field) -> str:
    if spec.default_factory is not dataclasses.MISSING:
        value = spec.default_factory()
        if isinstance(value, LayerSelection):
            config = value.to_config()
            return repr(config.get("default")) if set(config) <= {"default"} else repr(config)
        return repr(value)
    return repr(spec.default) if spec.default is not dataclasses.MISSING else "(required)"
