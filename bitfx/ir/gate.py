"""Channel gates: a learnable scale per channel, the sparse factor of gated channel pruning
(`insert_gates` places them, training with an ℓ1 penalty drives some to zero,
`rank_prune(criterion="gate")` removes the channels with the smallest |g|).

A gate computes y = g ⊙ x along the channel axis (dim 1). The gates of one pruning group share one
parameter, so a residual channel has a single gate across every layer of its stage that writes it.

Gates never reach a file: `fold_gates` multiplies each gate into the layer that produced its input
(a conv or linear: its output rows and bias; a BatchNorm: its affine weight and bias; a binary layer:
its output scale and bias), and every lowering exports the folded graph.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, fx, nn
from torch.nn.modules.batchnorm import _BatchNorm

from bitfx.errors import LoweringError
from bitfx.ir.binary import BinaryLayer
from bitfx.ir.rewrite import call_counts, computes_as, modules_sharing_parameters


class ChannelGate(nn.Module):
    """y = g ⊙ x per channel (dim 1). `gate` is the number of channels (a new gate of ones) or a
    parameter shared with the other gates of the same channel group."""

    bitfx_leaf = True

    def __init__(self, gate: int | nn.Parameter) -> None:
        super().__init__()
        self.gate = gate if isinstance(gate, nn.Parameter) else nn.Parameter(torch.ones(gate))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gate.view(1, -1, *([1] * (x.dim() - 2)))

    def extra_repr(self) -> str:
        return f"channels={self.gate.numel()}"


def gate_nodes(gm: fx.GraphModule) -> list[fx.Node]:
    """The nodes of `gm` that call a `ChannelGate`, in graph order."""
    return [
        node
        for node in gm.graph.nodes
        if node.op == "call_module" and isinstance(gm.get_submodule(node.target), ChannelGate)
    ]


def fold_gates(gm: fx.GraphModule) -> fx.GraphModule:
    """A copy of `gm` with every gate multiplied into the layer before it and removed; `gm` itself
    when it has no gate. `gm` is never modified. A gate whose input is not a layer that can absorb
    it alone (conv, linear, BatchNorm or binary layer called once, sharing no parameter, read by the gate only) raises
    `LoweringError` naming it: a lowering never writes a gate op."""
    if not gate_nodes(gm):
        return gm
    folded = copy.deepcopy(gm)
    counts, sharing = call_counts(folded), modules_sharing_parameters(folded)
    for node in gate_nodes(folded):
        gate = folded.get_submodule(node.target).gate.detach()
        source = node.args[0]
        layer = folded.get_submodule(source.target) if source.op == "call_module" else None
        alone = layer is not None and counts[source.target] == 1 and source.target not in sharing
        if not alone or len(source.users) > 1 or not _fold(layer, gate):
            raise LoweringError(
                f"gate {node.target!r} cannot be folded into {source.name!r}: a gate must directly follow a conv, "
                "linear, affine BatchNorm or binary layer that is called once, shares no parameter and is read by "
                "the gate alone"
            )
        node.replace_all_uses_with(source)
        folded.graph.erase_node(node)
    folded.graph.eliminate_dead_code()
    folded.delete_all_unused_submodules()
    folded.recompile()
    return folded


def _fold(layer: nn.Module, gate: Tensor) -> bool:
    """Make `layer` compute g ⊙ (its output) in place; False when it cannot."""
    with torch.no_grad():
        if isinstance(layer, BinaryLayer):
            layer.fold_output_affine(gate, torch.zeros_like(gate))
            return True
        if computes_as(layer, _BatchNorm) and layer.affine:
            layer.weight.mul_(gate.to(layer.weight.dtype))
            layer.bias.mul_(gate.to(layer.bias.dtype))
            return True
        if computes_as(layer, _GATEABLE_LAYERS):
            weight = layer.weight
            weight.mul_(gate.to(weight.dtype).view(-1, *([1] * (weight.dim() - 1))))
            if layer.bias is not None:
                layer.bias.mul_(gate.to(layer.bias.dtype))
            return True
    return False


_GATEABLE_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
