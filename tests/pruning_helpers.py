"""The reference a pruned model must match: the unpruned graph with every weight that reads a
removed channel set to zero (conv input slices, linear columns). Removing a channel
physically must compute exactly that."""

import copy

import torch
from torch import fx, nn

from bitfx.passes.prune.groups import analyze_channels
from bitfx.passes.prune.plan import PrunePlan


def removed_channels(gm: fx.GraphModule, plan: PrunePlan, prune_classifier: bool = False) -> tuple[object, set[int]]:
    """The analysis of `gm` and the channels (union-find roots) the plan removes."""
    analysis = analyze_channels(gm, prune_classifier=prune_classifier)
    assert [g.name for g in analysis.groups] == [g.name for g in plan.groups]
    removed = {group.channels[p] for group, decided in zip(analysis.groups, plan.groups) for p in decided.removed}
    return analysis, removed


def masked_reference(gm: fx.GraphModule, plan: PrunePlan, prune_classifier: bool = False) -> fx.GraphModule:
    """A copy of `gm` whose consumers ignore the removed channels (zero weights) instead."""
    analysis, removed = removed_channels(gm, plan, prune_classifier)
    masked = copy.deepcopy(gm)
    for node in masked.graph.nodes:
        if node.op != "call_module" or not node.args or getattr(node.args[0], "name", None) not in analysis.maps:
            continue
        module = masked.get_submodule(node.target)
        dense = isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and module.groups == 1)
        if not dense:
            continue
        kept = set(analysis.kept_positions(node.args[0].name, removed))
        dropped = [k for k in range(len(analysis.maps[node.args[0].name])) if k not in kept]
        with torch.no_grad():
            module.weight[:, dropped] = 0
    return masked
