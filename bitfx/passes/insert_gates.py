"""`InsertGates` (`insert_gates`): a learnable channel gate (`bitfx.ir.gate.ChannelGate`) on every
prunable channel group, for gated channel pruning (GAL / CoGD: train with an ℓ1 penalty on the gates,
then `rank_prune(criterion="gate")` removes the channels whose |g| is smallest).

The groups are those of the pruning analysis (`bitfx.passes.prune.groups`): one gate parameter per
group, one entry per channel. Every layer that writes the group's channels gets a `ChannelGate`
holding that shared parameter, so a residual channel has a single gate across its whole stage
(stem or downsample conv and the last conv of every block). The gate goes after the BatchNorm that
directly follows the layer, or right after the layer when there is none (a BatchNorm already folded
by `fuse_bn`, or a model without one): either way it multiplies the output the next layers read,
and lowering folds it into that BatchNorm or layer.

Gates start at 1, so the model's outputs do not change (the pipeline checks it). Layers whose output
channels the analysis keeps (the classifier, channels reaching the output, a grouped conv, ...) get no
gate and are reported under `skipped` with the reason, and so is every layer of a group whose layers
do not list its channels in one order (one parameter could not serve them all).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import fx, nn

from bitfx.ir.gate import ChannelGate, gate_nodes
from bitfx.ir.rewrite import free_name, module_of, only_user
from bitfx.passes.core.base import Pass, PassContext, PassResult
from bitfx.passes.core.registry import register_pass
from bitfx.passes.prune import channel_ops as ops
from bitfx.passes.prune.groups import ChannelAnalysis, ChannelGroup, analyze_channels, unprunable_layers


@register_pass
@dataclass
class InsertGates(Pass):
    """Put one learnable gate (initialised to 1) on the channels of every prunable group."""

    name = "insert_gates"
    preserves_outputs = True

    prune_classifier: bool = False

    def run(self, gm: fx.GraphModule, context: PassContext) -> PassResult:
        if gate_nodes(gm):
            skipped = {n.target: "the graph already has gates: insert_gates runs once" for n in gate_nodes(gm)}
            return PassResult(gm, False, {"gated": 0, "groups": 0, "skipped": skipped})
        analysis = analyze_channels(gm, prune_classifier=self.prune_classifier)
        nodes = {node.name: node for node in gm.graph.nodes}
        skipped = unprunable_layers(gm, analysis)
        gated, groups = [], 0
        for group in analysis.groups:
            reason = _why_not_gated(analysis, group)
            if reason:
                skipped.update(dict.fromkeys(group.layers, reason))
                continue
            like = gm.get_submodule(group.layers[0]).weight
            gate = nn.Parameter(torch.ones(len(group.channels), dtype=like.dtype, device=like.device))
            for space in (s for s in group.spaces if s.prunable):
                gated.append(_insert_after(gm, _gate_site(gm, nodes[space.node]), gate))
            groups += 1
        if gated:
            gm.recompile()
        return PassResult(gm, bool(gated), {"gated": len(gated), "groups": groups, "skipped": skipped})


def _why_not_gated(analysis: ChannelAnalysis, group: ChannelGroup) -> str | None:
    """None when one gate parameter can serve every layer of `group`, else why the group gets none."""
    if not group.prunable():
        reasons = sorted({r for rs in group.fixed.values() for r in rs}) or group.blocking_ops()
        return "no prunable channel: " + (reasons[0] if reasons else "every channel is kept")
    position = {channel: i for i, channel in enumerate(group.channels)}
    for space in (s for s in group.spaces if s.prunable):
        if [position.get(analysis.channel_of(slot)) for slot in space.slots] != list(range(len(group.channels))):
            return f"{space.layer} does not write the group's channels in the group's order: no shared gate"
    return None


def _gate_site(gm: fx.GraphModule, layer_node: fx.Node) -> fx.Node:
    """The node a layer's gate follows: the BatchNorm that alone reads the layer, else the layer."""
    user = only_user(layer_node)
    if user is not None and ops.layer_type(module_of(gm, user)) in ops.BATCHNORM_TYPES:
        return user
    return layer_node


def _insert_after(gm: fx.GraphModule, site: fx.Node, gate: nn.Parameter) -> str:
    """Call a new `ChannelGate` sharing `gate` on `site`'s output, for every reader of it; its name."""
    name = free_name(gm, f"{str(site.target).replace('.', '_')}_gate")
    gm.add_submodule(name, ChannelGate(gate))
    users = list(site.users)
    with gm.graph.inserting_after(site):
        gated = gm.graph.call_module(name, (site,))
    for user in users:
        user.replace_input_with(site, gated)
    return name
