"""What the channel analysis knows about ops: which keep channels and which combine them (the
activations among them are `bitfx.ir.rewrite`'s). An op that is in none of these tables is
*unknown* to the analysis."""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import fx, nn

from bitfx.ir.rewrite import ACTIVATION_FUNCTIONS, ACTIVATION_METHODS, ACTIVATION_MODULES

# Layers whose parameters follow the channels and which pruning rebuilds smaller. Exact types
# only: a subclass may keep per-channel state of its own, so it counts as unknown.
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
)
SOFTMAX_MODULES: tuple[type[nn.Module], ...] = (nn.Softmax, nn.LogSoftmax)

CHANNELWISE_FUNCTIONS = ACTIVATION_FUNCTIONS | {
    F.dropout,
    F.max_pool1d,
    F.max_pool2d,
    F.max_pool3d,
    F.avg_pool1d,
    F.avg_pool2d,
    F.avg_pool3d,
    F.adaptive_avg_pool1d,
    F.adaptive_avg_pool2d,
    F.adaptive_avg_pool3d,
    F.adaptive_max_pool1d,
    F.adaptive_max_pool2d,
    F.adaptive_max_pool3d,
    torch.clamp,
    torch.abs,
    torch.neg,
    operator.neg,
}
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


def describe(node: fx.Node, module: nn.Module | None) -> str:
    """How an op is named in messages: `module 'tail.1' (PixelShuffle)`, `function cat (node 'cat_3')`."""
    if node.op == "call_module":
        return f"module {node.target!r} ({type(module).__name__})"
    if node.op == "call_method":
        return f"method .{node.target}() (node {node.name!r})"
    return f"function {getattr(node.target, '__name__', node.target)} (node {node.name!r})"
