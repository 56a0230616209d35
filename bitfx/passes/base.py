"""The `Pass` base class and what a pass returns."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import fx


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
    - `run`: the rewrite. It may change `gm` in place (the pipeline hands it a copy).
    """

    name: ClassVar[str]
    preserves_outputs: ClassVar[bool] = False

    def requires(self, gm: fx.GraphModule) -> None:
        """Raise `PassError` when `gm` is not something this pass can work on."""

    def ensures(self, gm: fx.GraphModule) -> None:
        """Raise `PassError` when the rewritten `gm` does not have the promised form."""

    def run(self, gm: fx.GraphModule, context: PassContext) -> PassResult:
        raise NotImplementedError(f"{type(self).__name__} does not implement run()")

    def params(self) -> dict[str, Any]:
        """The parameters of this pass instance, by field name."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)} if dataclasses.is_dataclass(self) else {}

    def describe(self) -> str:
        """`name(key=value, …)`: the pass as it is written in a `--passes` list."""
        args = ", ".join(f"{key}={value!r}" for key, value in self.params().items())
        return f"{self.name}({args})" if args else self.name
