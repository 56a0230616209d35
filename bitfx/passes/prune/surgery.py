"""Physical channel removal: smaller conv, BatchNorm and linear layers swapped into the graph.

Given the channel analysis and the set of channels to remove, every layer whose input or
output loses positions is rebuilt with the kept rows/columns of its weights (conv weights
(out, in/groups, k…), linear (out, in), BatchNorm's affine parameters and running
statistics, a channel gate's entries); a depthwise conv keeps groups = channels. Gates that share
one parameter keep sharing the smaller one. Nothing is masked: the new layers are simply smaller,
and the graph code (cat, flatten, add) needs no change.
"""

from __future__ import annotations

import torch
from torch import fx, nn

from bitfx.ir.gate import ChannelGate
from bitfx.passes.prune import channel_ops as ops
from bitfx.passes.prune.groups import ChannelAnalysis


def remove_channels(gm: fx.GraphModule, analysis: ChannelAnalysis, removed: set[int]) -> list[str]:
    """Replace, in `gm`, every layer that loses channels by a smaller one; returns their names."""
    rewritten = []
    smaller_gates: dict[int, nn.Parameter] = {}
    for node in gm.graph.nodes:
        if (
            node.op != "call_module"
            or node.name not in analysis.maps
            or not node.args
            or node.args[0].name not in analysis.maps
        ):
            continue
        module = gm.get_submodule(node.target)
        if isinstance(module, ChannelGate):
            kept = analysis.kept_positions(node.name, removed)
            if len(kept) < module.gate.numel():
                old = module.gate
                if id(old) not in smaller_gates:
                    smaller_gates[id(old)] = nn.Parameter(old.detach()[kept].clone(), old.requires_grad)
                module.gate = smaller_gates[id(old)]
                rewritten.append(node.target)
            continue
        if ops.layer_type(module) not in _SHRINKABLE:
            continue
        kept_in = analysis.kept_positions(node.args[0].name, removed)
        kept_out = analysis.kept_positions(node.name, removed)
        if len(kept_in) == len(analysis.maps[node.args[0].name]) and len(kept_out) == len(analysis.maps[node.name]):
            continue
        smaller = _shrink(module, kept_in, kept_out)
        smaller.train(module.training)
        gm.add_submodule(node.target, smaller)
        rewritten.append(node.target)
    gm.recompile()
    return rewritten


_SHRINKABLE = ops.CONV_TYPES + ops.LINEAR_TYPES + ops.BATCHNORM_TYPES


def _shrink(module: nn.Module, kept_in: list[int], kept_out: list[int]) -> nn.Module:
    if ops.layer_type(module) in ops.CONV_TYPES:
        return _shrink_conv(module, kept_in, kept_out)
    if ops.layer_type(module) in ops.LINEAR_TYPES:
        smaller = nn.Linear(
            len(kept_in), len(kept_out), module.bias is not None, device=module.weight.device, dtype=module.weight.dtype
        )
        _copy(smaller.weight, module.weight[kept_out][:, kept_in])
        if module.bias is not None:
            _copy(smaller.bias, module.bias[kept_out])
        return smaller
    return _shrink_batchnorm(module, kept_in)


def _shrink_conv(conv: nn.Module, kept_in: list[int], kept_out: list[int]) -> nn.Module:
    depthwise = conv.groups > 1
    groups = len(kept_in) if depthwise else 1
    smaller = ops.layer_type(conv)(
        len(kept_in),
        len(kept_out),
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        groups,
        conv.bias is not None,
        conv.padding_mode,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )
    weight = conv.weight[kept_out]
    _copy(smaller.weight, weight if depthwise else weight[:, kept_in])
    if conv.bias is not None:
        _copy(smaller.bias, conv.bias[kept_out])
    return smaller


def _shrink_batchnorm(bn: nn.Module, kept: list[int]) -> nn.Module:
    like = bn.weight if bn.affine else bn.running_mean
    factory = {"device": like.device, "dtype": like.dtype} if like is not None else {}
    smaller = ops.layer_type(bn)(len(kept), bn.eps, bn.momentum, bn.affine, bn.track_running_stats, **factory)
    if bn.affine:
        _copy(smaller.weight, bn.weight[kept])
        _copy(smaller.bias, bn.bias[kept])
    if bn.track_running_stats:
        _copy(smaller.running_mean, bn.running_mean[kept])
        _copy(smaller.running_var, bn.running_var[kept])
        _copy(smaller.num_batches_tracked, bn.num_batches_tracked)
    return smaller


def _copy(target: torch.Tensor, source: torch.Tensor) -> None:
    with torch.no_grad():
        target.copy_(source)
    if isinstance(target, nn.Parameter):
        target.requires_grad_(source.requires_grad)
