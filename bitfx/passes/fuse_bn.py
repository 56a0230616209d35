"""`FuseBN`: fold eval-mode BatchNorm into the convolution or linear layer before it.

With s = γ / √(σ² + ε) per output channel (γ = 1, β = 0 when the BN is not affine):

    W' = W · s    (along the output-channel axis)
    b' = (b − μ) · s + β

For a transposed convolution the weight is (C_in, C_out/groups, k…), so the output-channel
axis is dim 1 within each group. The folded layer equals conv → BN in eval mode (running
statistics); after folding, training no longer normalises by batch statistics.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch
from torch import fx, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

from bitfx.ir.rewrite import call_counts, module_of, modules_sharing_parameters
from bitfx.ir.shapes import node_shape
from bitfx.passes.core.base import Pass, PassContext, PassResult
from bitfx.passes.core.ordering import BINARY_LAYERS
from bitfx.passes.core.registry import register_pass

# layer type → the BatchNorm type whose channels are its output channels
_FOLDABLE: tuple[tuple[type[nn.Module], type[nn.Module]], ...] = (
    (nn.Conv1d, nn.BatchNorm1d),
    (nn.Conv2d, nn.BatchNorm2d),
    (nn.Conv3d, nn.BatchNorm3d),
    (nn.ConvTranspose1d, nn.BatchNorm1d),
    (nn.ConvTranspose2d, nn.BatchNorm2d),
    (nn.ConvTranspose3d, nn.BatchNorm3d),
    (nn.Linear, nn.BatchNorm1d),
)


@register_pass
@dataclass
class FuseBN(Pass):
    """Fold every BatchNorm that directly follows a conv/linear into that layer's weights."""

    name = "fuse_bn"
    preserves_outputs = True
    conflicts = (BINARY_LAYERS,)

    def run(self, gm: fx.GraphModule, context: PassContext) -> PassResult:
        calls = call_counts(gm)
        sharing = modules_sharing_parameters(gm)
        fused, skipped = [], {}
        for bn_node in list(gm.graph.nodes):
            if not isinstance(module_of(gm, bn_node), _BatchNorm):
                continue
            layer_node = bn_node.args[0]
            reason = _why_not_foldable(gm, layer_node, bn_node, calls, sharing)
            if reason:
                skipped[bn_node.target] = reason
                continue
            _fold(gm.get_submodule(layer_node.target), gm.get_submodule(bn_node.target))
            bn_node.replace_all_uses_with(layer_node)
            gm.graph.erase_node(bn_node)
            fused.append(f"{layer_node.target}+{bn_node.target}")
        if fused:
            gm.graph.eliminate_dead_code()
            gm.delete_all_unused_submodules()
            gm.recompile()
        return PassResult(gm, bool(fused), {"fused": len(fused), "skipped": skipped, "pairs": fused})


def _why_not_foldable(
    gm: fx.GraphModule, layer_node: object, bn_node: fx.Node, calls: Counter, sharing: set[str]
) -> str | None:
    """None when `layer_node → bn_node` can be folded, otherwise the reason it cannot."""
    bn = gm.get_submodule(bn_node.target)
    if not isinstance(layer_node, fx.Node) or layer_node.op != "call_module":
        return "input is not a conv/linear module"
    layer = gm.get_submodule(layer_node.target)
    if not any(type(layer) is layer_type and type(bn) is bn_type for layer_type, bn_type in _FOLDABLE):
        return f"input is a {type(layer).__name__}, which cannot absorb a {type(bn).__name__}"
    if len(layer_node.users) > 1:
        others = ", ".join(u.name for u in layer_node.users if u is not bn_node)
        return f"the output of {layer_node.target} has other users ({others})"
    if calls[layer_node.target] > 1:
        return f"{layer_node.target} is called from {calls[layer_node.target]} places"
    if layer_node.target in sharing:
        return f"{layer_node.target} shares a parameter with another module"
    if bn.running_mean is None or bn.running_var is None:
        return "the BatchNorm keeps no running statistics (track_running_stats=False)"
    if isinstance(layer, nn.Linear) and len(node_shape(layer_node) or ()) != 2:
        return "BatchNorm1d after a Linear with a non-2D output normalises another axis"
    return None


def _fold(layer: nn.Module, bn: _BatchNorm) -> None:
    """Fold `bn`'s eval-mode affine map into `layer`'s weight and bias, in place."""
    with torch.no_grad():
        scale = bn.running_var.double().add(bn.eps).rsqrt()
        if bn.affine:
            scale = scale * bn.weight.double()
        shift = -bn.running_mean.double() * scale
        if bn.affine:
            shift = shift + bn.bias.double()
        weight = layer.weight.double()
        if isinstance(layer, _ConvNd) and layer.transposed:
            groups = layer.groups
            grouped = weight.reshape(groups, weight.shape[0] // groups, weight.shape[1], *weight.shape[2:])
            view = (groups, 1, weight.shape[1]) + (1,) * (weight.dim() - 2)
            weight = (grouped * scale.reshape(view)).reshape(weight.shape)
        else:
            weight = weight * scale.reshape((-1,) + (1,) * (weight.dim() - 1))
        bias = layer.bias.double() if layer.bias is not None else torch.zeros_like(scale)
        layer.weight.copy_(weight.to(layer.weight.dtype))
        new_bias = (bias * scale + shift).to(layer.weight.dtype)
        if layer.bias is None:
            layer.bias = nn.Parameter(new_bias)
        else:
            layer.bias.copy_(new_bias)
