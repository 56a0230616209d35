"""`InsertIFF` (`iff`): inference-aware feature filtering — feed a detection head's outputs back.

For a feature map x and the head h that reads it (outputs y₁ … y_k, e.g. class scores and box
offsets), the rewrite runs the head, filters the features with what it predicted, and runs the
*same* head again (its modules are shared, not copied):

    y = h(x)
    x′ = x + back(act(cat(y₁, …, y_k)))        back: Conv(Σ channels(yᵢ) → channels(x), k×k, padding k//2)
    y′ = h(x′)                                  the graph's outputs become y′

`act` is leaky ReLU (slope 0.01, the FoveaBox head), sigmoid (the RetinaNet head) or ReLU (the
YOLOv2 head). `back` starts N(0, std) with zero bias (`init="normal"`, std 0.01 as released) or all
zero (`init="zero"`): then x′ = x, y′ = y exactly, and the pipeline checks that the outputs did not
change. The rewrite lowers to standard ONNX (Concat, LeakyRelu/Sigmoid/Relu, Conv, Add and the
head twice).

The head is every node between `features` and `outputs`: it must read nothing but the features
(and parameters), and the outputs must be 4-D maps of the features' spatial size. Otherwise the
graph is left unchanged and the statistics say why.

Composition: after `iff` the head's modules are called from two places. `binarize` and
`rank_prune` leave such modules unchanged and report it, so run them before `iff`
(e.g. `--passes fuse_bn,binarize,iff(...)`): the binarized head is then what runs twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import fx, nn

from bitfx.errors import PassConfigError
from bitfx.ir.rewrite import free_name
from bitfx.ir.shapes import node_shape
from bitfx.passes.core.base import Pass, PassContext, PassResult
from bitfx.passes.core.registry import register_pass

_ACTIVATIONS = {"leaky_relu": F.leaky_relu, "sigmoid": torch.sigmoid, "relu": torch.relu}


@register_pass
@dataclass
class InsertIFF(Pass):
    """Feed a detection head's outputs back into its features and run the same head again."""

    name = "iff"

    features: str = ""
    outputs: list[str] = field(default_factory=list)
    activation: Literal["leaky_relu", "sigmoid", "relu"] = "leaky_relu"
    kernel_size: int = 3
    init: Literal["normal", "zero"] = "zero"
    std: float = 0.01
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.outputs, str):
            self.outputs = [name for name in self.outputs.split("+") if name]
        if not self.features or not self.outputs:
            raise PassConfigError("pass 'iff' needs features=<node name> and outputs=<node names joined by '+'>")
        if self.activation not in _ACTIVATIONS:
            raise PassConfigError(f"pass 'iff': activation={self.activation!r} must be one of {sorted(_ACTIVATIONS)}")
        if self.init not in ("normal", "zero"):
            raise PassConfigError(f"pass 'iff': init={self.init!r} must be 'normal' or 'zero'")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise PassConfigError(f"pass 'iff': kernel_size={self.kernel_size} must be odd (the map keeps its size)")

    @property
    def preserves_outputs(self) -> bool:  # type: ignore[override]
        """Zero init keeps x′ = x, so the head's outputs are unchanged and the pipeline checks it."""
        return self.init == "zero"

    def run(self, gm: fx.GraphModule, context: PassContext) -> PassResult:
        nodes = {node.name: node for node in gm.graph.nodes}
        missing = [name for name in [self.features, *self.outputs] if name not in nodes]
        if missing:
            return _skipped(gm, self.features, f"no node named {', '.join(missing)} (node names: {', '.join(nodes)})")
        feature, outputs = nodes[self.features], [nodes[name] for name in self.outputs]
        head = _head_nodes(gm.graph, feature, outputs)
        reason = _why_not_head(feature, outputs, head)
        if reason:
            return _skipped(gm, self.features, reason)
        back = self._back_conv(node_shape(feature)[1], sum(node_shape(o)[1] for o in outputs))
        target = free_name(gm, f"iff_back_{feature.name}")
        gm.add_submodule(target, back)
        order = [node for node in gm.graph.nodes if node in head]
        with gm.graph.inserting_after(order[-1]):
            anchor = gm.graph.call_function(torch.cat, (tuple(outputs), 1))
        with gm.graph.inserting_after(anchor):
            activated = gm.graph.call_function(_ACTIVATIONS[self.activation], (anchor,))
        with gm.graph.inserting_after(activated):
            correction = gm.graph.call_module(target, (activated,))
        with gm.graph.inserting_after(correction):
            filtered = gm.graph.call_function(torch.add, (feature, correction))
        copies = {feature: filtered}
        with gm.graph.inserting_before(filtered.next):
            for node in order:
                copies[node] = gm.graph.node_copy(node, lambda n: copies.get(n, n))
        keep = set(head) | {anchor}
        for output in outputs:
            for user in list(output.users):
                if user not in keep:
                    user.replace_input_with(output, copies[output])
        gm.graph.eliminate_dead_code()
        stats = {
            "features": feature.name,
            "outputs": [o.name for o in outputs],
            "head_nodes": len(order),
            "back": f"{back.in_channels}→{back.out_channels} {self.kernel_size}×{self.kernel_size}",
            "init": self.init,
            "skipped": {},
        }
        return PassResult(gm, True, stats)

    def _back_conv(self, channels: int, head_channels: int) -> nn.Conv2d:
        conv = nn.Conv2d(head_channels, channels, self.kernel_size, padding=self.kernel_size // 2)
        with torch.no_grad():
            if self.init == "zero":
                conv.weight.zero_()
            else:
                conv.weight.normal_(0.0, self.std, generator=torch.Generator().manual_seed(self.seed))
            conv.bias.zero_()
        return conv


def _head_nodes(graph: fx.Graph, feature: fx.Node, outputs: list[fx.Node]) -> set[fx.Node]:
    """Nodes on a path from `feature` to one of `outputs` (feature excluded, outputs included)."""
    downstream, frontier = set(), [feature]
    while frontier:
        for user in frontier.pop().users:
            if user not in downstream:
                downstream.add(user)
                frontier.append(user)
    head, frontier = set(), [o for o in outputs if o in downstream]
    while frontier:
        node = frontier.pop()
        if node in head:
            continue
        head.add(node)
        frontier.extend(n for n in node.all_input_nodes if n in downstream)
    return head


def _why_not_head(feature: fx.Node, outputs: list[fx.Node], head: set[fx.Node]) -> str | None:
    """Why the nodes between `feature` and `outputs` cannot be run twice as a head, or None."""
    unreached = [o.name for o in outputs if o not in head]
    if unreached:
        return f"{', '.join(unreached)} do not depend on {feature.name}"
    for node in head:
        others = [n.name for n in node.all_input_nodes if n not in head and n is not feature and n.op != "get_attr"]
        if others:
            return f"head node {node.name} also reads {', '.join(others)}: the head must read only {feature.name}"
    shape = node_shape(feature)
    if shape is None or len(shape) != 4:
        return f"{feature.name} is not a 4-D feature map (shape {shape})"
    for output in outputs:
        out_shape = node_shape(output)
        if out_shape is None or len(out_shape) != 4 or tuple(out_shape[2:]) != tuple(shape[2:]):
            size = tuple(shape[2:])
            return f"head output {output.name} has shape {out_shape}; IFF needs maps of {feature.name}'s size {size}"
    return None


def _skipped(gm: fx.GraphModule, features: str, reason: str) -> PassResult:
    """Nothing inserted: the feature node is reported under `skipped` with the reason."""
    return PassResult(gm, False, {"skipped": {features: reason}})
