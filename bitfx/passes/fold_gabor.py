"""`FoldGabor` (`fold_gabor`): bake each learnable Gabor filter into a plain depthwise convolution.

A `GaborConv2d` recomputes its kernel from five parameters per channel at every forward
(θ, σ, λ, ψ, γ; the formula is in `bitfx.ir.search_ops.gabor_kernel`) and applies it as a
depthwise k×k convolution with padding k // 2. Once training is over the kernel is a constant:

    GaborConv2d(x) = conv2d(x, K(θ, σ, λ, ψ, γ), padding=k // 2, groups=C)  =  Conv2d_K(x)

so the layer is replaced by an `nn.Conv2d(C, C, k, padding=k // 2, groups=C, bias=False)`
holding K. The outputs are unchanged (the pipeline's numerical check verifies it), and the
result lowers with the standard `Conv` of every back end.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch
from torch import fx, nn

from bitfx.ir.rewrite import call_counts, replace_module
from bitfx.ir.search_ops import GaborConv2d
from bitfx.ir.shapes import node_shape
from bitfx.passes.core.base import Pass, PassContext, PassResult
from bitfx.passes.core.registry import register_pass


@register_pass
@dataclass
class FoldGabor(Pass):
    """Replace every `GaborConv2d` by the depthwise `nn.Conv2d` with its current kernel."""

    name = "fold_gabor"
    preserves_outputs = True

    def run(self, gm: fx.GraphModule, context: PassContext) -> PassResult:
        calls = call_counts(gm)
        folded, skipped = [], {}
        for node in gm.graph.nodes:
            if node.op != "call_module" or not isinstance(gm.get_submodule(node.target), GaborConv2d):
                continue
            gabor = gm.get_submodule(node.target)
            reason = _why_not_foldable(node, gabor, calls)
            if reason:
                skipped[node.target] = reason
                continue
            replace_module(gm, node.target, _as_conv(gabor))
            folded.append(node.target)
        if folded:
            gm.recompile()
        return PassResult(gm, bool(folded), {"folded": len(folded), "skipped": skipped, "layers": folded})


def _why_not_foldable(node: fx.Node, gabor: GaborConv2d, calls: Counter) -> str | None:
    shape = node_shape(node.args[0]) if node.args else None
    channels = gabor.theta.numel()
    if calls[node.target] > 1:
        return f"called from {calls[node.target]} places"
    if shape is None or len(shape) != 4:
        return "input shape unknown or not (N, C, H, W)"
    if shape[1] != channels:
        return f"input has {shape[1]} channels, the filter has {channels}"
    return None


def _as_conv(gabor: GaborConv2d) -> nn.Conv2d:
    channels = gabor.theta.numel()
    conv = nn.Conv2d(channels, channels, gabor.size, padding=gabor.size // 2, groups=channels, bias=False)
    with torch.no_grad():
        conv.weight.copy_(gabor.kernel())
    return conv.to(gabor.theta.device).train(gabor.training)
