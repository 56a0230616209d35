"""The `Pass` base class and what a pass returns."""

from __future__ import annotations

import dataclasses
import functools
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import fx

from bitfx.passes.core.ordering import GraphFeature
from bitfx.passes.core.selection import LayerSelection


@dataclass(frozen=True)
class PassResult:
    """What a pass hands back: the rewritten graph, whether it changed, and its statistics."""

    graph_module: fx.GraphModule
    modified: bool
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PassContext:
    """What the pipeline gives every pass besides the graph: example inputs (always) and
    calibration batches (when the user supplied data)."""

    example_inputs: tuple[torch.Tensor, ...]
    data: Iterable[Any] | None = None


class Pass:
    """One graph rewrite. Subclasses are dataclasses: their fields are the pass parameters,
    which makes a pass buildable from text or a config file and savable back.

    - `name`: the registered name used in pipelines and config files.
    - `preserves_outputs`: True when the rewrite keeps the model's eval-mode outputs;
      the pipeline then checks that numerically.
    - `requires` / `ensures`: optional pre/post-condition checks that raise `PassError`.
    - `needs` / `conflicts` / `creates`: graph features (`bitfx.passes.core.ordering`) the pass
      needs, cannot work with, and adds; the pipeline refuses an order that cannot work before
      running anything.
    - `run`: the rewrite. It may change `gm` in place (the pipeline hands it a copy). Its
      statistics hold `skipped`: {layer name: why it was left unchanged} for every layer the
      pass considered and did not rewrite (an empty dict when there is none).

    Fields annotated `LayerSelection` accept anything `LayerSelection.from_config` does (a
    `{"by_name": {...}}` dict, a bare default value) and hold a `LayerSelection` afterwards;
    a dict's missing keys keep the field's default selection (an excluded layer does not
    drop the default for the others).
    A subclass with its own `__post_init__` calls `super().__post_init__()` first.
    """

    name: ClassVar[str]
    preserves_outputs: ClassVar[bool] = False
    needs: ClassVar[tuple[GraphFeature, ...]] = ()
    conflicts: ClassVar[tuple[GraphFeature, ...]] = ()
    creates: ClassVar[tuple[GraphFeature, ...]] = ()

    def __post_init__(self) -> None:
        for name in _selection_fields(type(self)):
            setattr(self, name, LayerSelection.from_config(getattr(self, name), _default_selection(type(self), name)))

    def requires(self, gm: fx.GraphModule) -> None:
        """Raise `PassError` when `gm` is not something this pass can work on."""

    def ensures(self, gm: fx.GraphModule) -> None:
        """Raise `PassError` when the rewritten `gm` does not have the promised form."""

    def run(self, gm: fx.GraphModule, context: PassContext) -> PassResult:
        raise NotImplementedError(f"{type(self).__name__} does not implement run()")

    def params(self) -> dict[str, Any]:
        """The parameters of this pass instance, by field name."""
        if not dataclasses.is_dataclass(self):
            return {}
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def describe(self) -> str:
        """`name(key=value, …)`: the pass as it is written in a `--passes` list."""
        args = ", ".join(f"{key}={value!r}" for key, value in self.params().items())
        return f"{self.name}({args})" if args else self.name


def _default_selection(cls: type, name: str) -> LayerSelection | None:
    """The selection field `name` of `cls` holds when it is not given."""
    spec = next(f for f in dataclasses.fields(cls) if f.name == name)
    if spec.default_factory is not dataclasses.MISSING:
        return LayerSelection.from_config(spec.default_factory())
    if spec.default is not dataclasses.MISSING:
        return LayerSelection.from_config(spec.default)
    return None


@functools.cache
def _selection_fields(cls: type) -> tuple[str, ...]:
    """The names of `cls`'s dataclass fields annotated `LayerSelection`."""
    if not dataclasses.is_dataclass(cls):
        return ()
    try:
        hints = typing.get_type_hints(cls)
    except NameError:  # an annotation names something local to where the class was defined
        hints = {f.name: f.type for f in dataclasses.fields(cls)}
    return tuple(f.name for f in dataclasses.fields(cls) if hints.get(f.name) in (LayerSelection, "LayerSelection"))
