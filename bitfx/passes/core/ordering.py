"""Which pass orders can work, decided from what each pass declares about the graph.

A pass class lists graph features (`GraphFeature`: a named test on the graph) in three
class attributes: `needs` (it does nothing useful without them), `conflicts` (it cannot work
on a graph that has them) and `creates` (it adds them). Before running anything, `check_order`
walks the pipeline from the input graph's features, adding each pass's `creates`, and raises
`PassError` naming the pass, the pass that creates (or created) the feature and the order that
works. Changing a rule is changing one of those declarations.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import fx, nn

from bitfx.errors import PassError
from bitfx.ir.binary import BinaryLayer, DeployedBinaryConv2d, DeployedBinaryLinear

if TYPE_CHECKING:
    from bitfx.passes.core.base import Pass


@dataclass(frozen=True)
class GraphFeature:
    """A property of a graph: `name` for messages and `example(gm)`, which returns the name of
    a layer that shows the feature, or None when the graph does not have it."""

    name: str
    example: Callable[[fx.GraphModule], str | None]


def _first_module(types: tuple[type[nn.Module], ...]) -> Callable[[fx.GraphModule], str | None]:
    def example(gm: fx.GraphModule) -> str | None:
        return next((name for name, module in gm.named_modules() if isinstance(module, types)), None)

    return example


BINARY_LAYERS = GraphFeature("binary layers", _first_module((BinaryLayer, DeployedBinaryConv2d, DeployedBinaryLinear)))


def check_order(passes: Sequence[Pass], gm: fx.GraphModule) -> None:
    """Raise `PassError` when a pass of `passes`, run in this order on `gm`, would lack a
    feature it needs or meet one it conflicts with."""
    features = {f for p in passes for f in (*p.needs, *p.conflicts, *p.creates)}
    source: dict[GraphFeature, tuple[str, str]] = {}  # feature -> (where it comes from, the fix)
    for feature in features:
        layer = feature.example(gm)
        if layer is not None:
            source[feature] = (f"the input graph has them (e.g. {layer!r})", "on the float model")
    for index, pass_ in enumerate(passes):
        for feature in pass_.needs:
            if feature not in source:
                raise PassError(_missing(pass_, feature, passes[index + 1 :]))
        for feature in pass_.conflicts:
            if feature in source:
                where, fix = source[feature]
                raise PassError(
                    f"pass {pass_.name!r} cannot work on {feature.name} and {where}: run {pass_.name!r} {fix}"
                )
        for feature in pass_.creates:
            source.setdefault(
                feature, (f"pass {pass_.name!r} (number {index + 1}) creates them", f"before {pass_.name!r}")
            )


def _missing(pass_: Pass, feature: GraphFeature, later: Sequence[Pass]) -> str:
    creator = next((p.name for p in later if feature in p.creates), None)
    if creator is not None:
        return (
            f"pass {pass_.name!r} needs {feature.name}, which pass {creator!r} creates, but {creator!r} comes after "
            f"it: run {creator!r} before it"
        )
    from bitfx.passes.core.registry import available_passes

    creators = [name for name, cls in available_passes().items() if feature in cls.creates]
    return (
        f"pass {pass_.name!r} needs {feature.name} and the graph has none; run "
        f"{' or '.join(repr(c) for c in creators) or 'a pass that creates them'} before it"
    )
