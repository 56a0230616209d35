"""What the channel analysis knows about ops: which keep channels and which combine them (the
activations among them are `bitfx.ir.rewrite`'s). An op that is in none of these tables is
*unknown* to the analysis."""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import fx, nn

from bitfx.ir.rewrite import (
    ACTIVATION_FUNCTIONS,
    ACTIVATION_METHODS,
    ACTIVATION_MODULES,
    POOLING_FUNCTIONS,
    computes_as,
    overridden_methods,
)

# Layers whose parameters follow the channels and which pruning rebuilds smaller (as the torch.nn
# type itself). A subclass counts as its torch.nn type when `layer_type` says so; otherwise it is unknown.
CONV_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
BATCHNORM_TYPES: tuple[type[nn.Module], ...] = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
LINEAR_TYPES: tuple[type[nn.Module], ...] = (nn.Linear,)
# Understood, but their channels are kept.
TRANSPOSED_CONV_TYPES: tuple[type[nn.Module], ...] = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)

# Modules that act on each channel on its own and hold no per-channel state.
CHANNELWISE_MODULES: tuple[type[nn.Module], ...] = ACTIVATION_MODULES + (
    nn.Identity,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
    nn.Upsample,
    nn.UpsamplingNearest2d,
    nn.UpsamplingBilinear2d,
)
SOFTMAX_MODULES: tuple[type[nn.Module], ...] = (nn.Softmax, nn.LogSoftmax)

CHANNELWISE_FUNCTIONS = (
    ACTIVATION_FUNCTIONS
    | POOLING_FUNCTIONS
    | {
        F.dropout,
        F.dropout1d,
        F.dropout2d,
        F.dropout3d,
        F.alpha_dropout,
        F.feature_alpha_dropout,
        F.interpolate,
        F.upsample,
        torch.clamp,
        torch.abs,
        torch.neg,
        operator.neg,
    }
)
CHANNELWISE_METHODS = ACTIVATION_METHODS | {
    "contiguous",
    "clone",
    "detach",
    "clamp",
    "clamp_",
    "clamp_min",
    "abs",
    "neg",
    "float",
    "to",
}

# Attributes of a tensor that are not tensors: reading them creates no channels.
TENSOR_FACTS = frozenset({"ndim", "shape", "dtype", "device"})
FACT_METHODS = frozenset({"dim"})
# Ops that only move values: when they move them across the channel axis (a reshape that is not a
# batch flatten, a transpose or permute of dim 1, a channel shuffle) the channels they read
# are kept, and what they make is a new, kept channel space.
LAYOUT_MODULES: tuple[type[nn.Module], ...] = (nn.ChannelShuffle, nn.Unflatten)
LAYOUT_FUNCTIONS = frozenset({torch.reshape, torch.permute, torch.transpose, torch.channel_shuffle})
LAYOUT_METHODS = frozenset({"view", "reshape", "permute", "transpose", "unflatten"})
# Channel-wise ops whose per-channel tensors are graph values (a BatchNorm subclass traced into
# F.batch_norm on its own buffers): pruning does not slice those, so the channels are kept.
STATISTICS_FUNCTIONS = frozenset({F.batch_norm})

ELEMENTWISE_FUNCTIONS = {
    operator.add,
    operator.iadd,
    operator.sub,
    operator.isub,
    operator.mul,
    operator.imul,
    operator.truediv,
    operator.itruediv,
    torch.add,
    torch.sub,
    torch.mul,
    torch.div,
}
ELEMENTWISE_METHODS = {"add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_"}
CONCAT_FUNCTIONS = {torch.cat, torch.concat, torch.concatenate}
REDUCE_FUNCTIONS = {torch.mean, torch.sum, torch.amax}
REDUCE_METHODS = {"mean", "sum", "amax"}
# Layers written as functions: their weights are graph values that pruning does not slice.
FUNCTIONAL_LAYERS = {F.conv1d, F.conv2d, F.conv3d, torch.conv1d, torch.conv2d, torch.conv3d, F.linear}
SOFTMAX_FUNCTIONS = {F.softmax, F.log_softmax, torch.softmax, torch.log_softmax}
SOFTMAX_METHODS = {"softmax", "log_softmax"}


def layer_type(module: nn.Module) -> type[nn.Module]:
    """The torch.nn layer type among the tables above that `module` can be pruned as: its own type, or the
    torch.nn base of a subclass that computes like it and holds no parameters, buffers or submodules of its
    own (a subclass with per-channel state of its own is not shrunk); else `type(module)`."""
    for base in CONV_TYPES + BATCHNORM_TYPES + LINEAR_TYPES + TRANSPOSED_CONV_TYPES:
        if type(module) is base:
            return base
        allowed = _BATCHNORM_STATE if base in BATCHNORM_TYPES else _LAYER_STATE
        if computes_as(module, base) and not list(module.children()) and _state_names(module) <= allowed:
            return base
    return type(module)


def _subclass_note(module: nn.Module) -> str:
    """For a subclass of a layer type that is not pruned as that type, why not."""
    base = next((b for b in CONV_TYPES + BATCHNORM_TYPES + LINEAR_TYPES if isinstance(module, b)), None)
    if base is None or layer_type(module) is base:
        return ""
    overridden = overridden_methods(module, base)
    if overridden:
        return f", a {base.__name__} subclass that overrides {', '.join(overridden)}"
    return f", a {base.__name__} subclass with state of its own that pruning would not slice"


def _state_names(module: nn.Module) -> set[str]:
    return {name for name, _ in module.named_parameters(recurse=False)} | {
        name for name, _ in module.named_buffers(recurse=False)
    }


# the parameters and buffers a torch.nn layer may hold
_LAYER_STATE = {"weight", "bias"}
_BATCHNORM_STATE = {"weight", "bias", "running_mean", "running_var", "num_batches_tracked"}


def describe(node: fx.Node, module: nn.Module | None) -> str:
    """How an op is named in messages: `module 'tail.1' (PixelShuffle)`, `function cat (node 'cat_3')`."""
    if node.op == "call_module":
        return f"module {node.target!r} ({type(module).__name__}{_subclass_note(module)})"
    if node.op == "call_method":
        return f"method .{node.target}() (node {node.name!r})"
    return f"function {getattr(node.target, '__name__', node.target)} (node {node.name!r})"
