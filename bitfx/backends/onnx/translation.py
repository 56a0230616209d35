"""Translation tables: how each lowering style writes bitfx's `torch.library` ops in ONNX.

`torch.onnx.export(dynamo=True)` keeps a custom op as one node and asks a translation
function (an onnxscript function) for its ONNX form. A file that
defines ops registers one function per lowering style with `register_translation`; a
lowering passes `translation_table(style, ...)` to the exporter.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import torch

Translation = TypeVar("Translation", bound=Callable[..., Any])
_TABLES: dict[str, dict[torch._ops.OpOverload, Callable[..., Any]]] = {}


def register_translation(style: str, op: torch._ops.OpOverload) -> Callable[[Translation], Translation]:
    """Decorator: `fn` is how the lowering style `style` writes `op` (an `OpOverload`)."""

    def register(fn: Translation) -> Translation:
        _TABLES.setdefault(style, {})[op] = fn
        return fn

    return register


def translation_table(*styles: str) -> dict[torch._ops.OpOverload, Callable[..., Any]]:
    """The merged table of `styles`; a later style overrides an earlier one for the same op."""
    table: dict[torch._ops.OpOverload, Callable[..., Any]] = {}
    for style in styles:
        table.update(_TABLES.get(style, {}))
    return table
