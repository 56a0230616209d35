"""Which values of a graph can never be negative: a forward analysis over the fx graph.

A value is *never negative* when it is made by a non-negative producer (ReLU, ReLU6, sigmoid,
hard-sigmoid, softmax, softplus, abs, exp, a clamp or Hardtanh whose lower bound is ≥ 0), or
computed only from never-negative values by an op that keeps them ≥ 0:

- ops of one tensor whose output elements are elements of it, or averages, sums or maxima of
  them: pooling, interpolation, dropout, identity, view / reshape / flatten / permute /
  transpose / squeeze / chunk / split and indexing of their pieces, channel and pixel shuffle,
  mean and sum; and activations f with f(0) = 0 that keep x ≥ 0 at ≥ 0 (LeakyReLU, ELU, GELU,
  SiLU, hard-swish, Hardtanh, tanh, …);
- ops that combine tensors: concatenation and stacking, the sum and the product of
  never-negative values (a gate: a ReLU feature map times a sigmoid), their quotient, and
  such values with a non-negative number.

Anything else (a conv, a BatchNorm, a subtraction, a module the analysis does not know) may be
negative. The analysis is conservative in that direction: "never negative" is a proof, "may be
negative" is not.

A binary layer whose input is never negative is degenerate: sign() of its input is +1
everywhere, so its output no longer depends on its input.
"""

from __future__ import annotations

import operator
from numbers import Number

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.nn.modules.dropout import _DropoutNd
from torch.nn.modules.pooling import _AdaptiveAvgPoolNd, _AdaptiveMaxPoolNd, _AvgPoolNd, _MaxPoolNd

from bitfx.ir.rewrite import ACTIVATION_FUNCTIONS, POOLING_FUNCTIONS

_PRODUCER_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.Sigmoid,
    nn.Hardsigmoid,
    nn.Softmax,
    nn.Softmax2d,
    nn.Softplus,
)
_PRODUCER_FUNCTIONS = frozenset(
    {
        F.relu,
        torch.relu,
        F.relu6,
        torch.sigmoid,
        F.sigmoid,
        F.hardsigmoid,
        F.softmax,
        torch.softmax,
        F.softplus,
        torch.abs,
        torch.exp,
    }
)
_PRODUCER_METHODS = frozenset({"relu", "relu_", "sigmoid", "sigmoid_", "softmax", "abs", "abs_", "exp", "exp_"})
_CLAMPS = frozenset({torch.clamp, torch.clip, torch.clamp_min, "clamp", "clamp_", "clip", "clamp_min", "clamp_min_"})

_FIRST_INPUT_MODULES: tuple[type[nn.Module], ...] = (
    _MaxPoolNd,
    _AvgPoolNd,
    _AdaptiveAvgPoolNd,
    _AdaptiveMaxPoolNd,
    _DropoutNd,
    nn.Identity,
    nn.Flatten,
    nn.Unflatten,
    nn.Upsample,
    nn.ChannelShuffle,
    nn.PixelShuffle,
    nn.PixelUnshuffle,
    # activations with f(0) = 0 that keep x ≥ 0 at ≥ 0
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.Hardtanh,
    nn.Tanh,
)
# pooling, and the activations with f(0) = 0 that keep x ≥ 0 at ≥ 0 (the other activations are producers)
_FIRST_INPUT_FUNCTIONS = (POOLING_FUNCTIONS | (ACTIVATION_FUNCTIONS - _PRODUCER_FUNCTIONS)) | frozenset(
    {
        operator.getitem,
        torch.flatten,
        torch.reshape,
        torch.permute,
        torch.transpose,
        torch.squeeze,
        torch.unsqueeze,
        torch.chunk,
        torch.split,
        torch.narrow,
        torch.mean,
        torch.sum,
        torch.channel_shuffle,
        F.pixel_shuffle,
        F.pixel_unshuffle,
        F.interpolate,
        F.dropout,
        F.dropout2d,
    }
)
_FIRST_INPUT_METHODS = frozenset(
    {
        "view",
        "view_as",
        "reshape",
        "reshape_as",
        "flatten",
        "unflatten",
        "permute",
        "transpose",
        "contiguous",
        "squeeze",
        "unsqueeze",
        "expand",
        "expand_as",
        "repeat",
        "chunk",
        "split",
        "narrow",
        "mean",
        "sum",
        "clone",
        "detach",
        "float",
        "to",
        "type_as",
        "tanh",
    }
)
_CONCATENATIONS = frozenset({torch.cat, torch.concat, torch.stack})
_ARITHMETIC = frozenset(
    {
        operator.add,
        operator.iadd,
        operator.mul,
        operator.imul,
        operator.truediv,
        torch.add,
        torch.mul,
        torch.div,
        "add",
        "add_",
        "mul",
        "mul_",
        "div",
        "div_",
    }
)

Producers = tuple[str, ...]


def never_negative(gm: fx.GraphModule) -> dict[fx.Node, Producers]:
    """Every node whose output is never negative, with the names of the non-negative producers it comes from."""
    found: dict[fx.Node, Producers] = {}
    for node in gm.graph.nodes:
        if node.op not in ("call_module", "call_function", "call_method"):
            continue
        if _is_producer(gm, node):
            found[node] = (node.name,)
            continue
        sources = non_negative_sources(gm, node)
        if sources and all(source in found for source in sources):
            found[node] = tuple(dict.fromkeys(name for source in sources for name in found[source]))
    return found


def describe(node: fx.Node, producers: Producers) -> str:
    """A sentence saying why `node` is never negative."""
    names = ", ".join(producers[:4]) + (f" and {len(producers) - 4} more" if len(producers) > 4 else "")
    if producers == (node.name,):
        return f"{node.name} is a non-negative activation"
    return f"it is computed only from the non-negative outputs of {names}"


def _is_producer(gm: fx.GraphModule, node: fx.Node) -> bool:
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        if isinstance(module, nn.Hardtanh):
            return module.min_val >= 0
        return isinstance(module, _PRODUCER_MODULES)
    if node.target in _CLAMPS:
        low = node.args[1] if len(node.args) > 1 else node.kwargs.get("min")
        return isinstance(low, Number) and low >= 0
    if node.op == "call_function" and node.target is F.hardtanh:
        low = node.args[1] if len(node.args) > 1 else node.kwargs.get("min_val", -1.0)
        return isinstance(low, Number) and low >= 0
    return node.target in (_PRODUCER_FUNCTIONS if node.op == "call_function" else _PRODUCER_METHODS)


def non_negative_sources(gm: fx.GraphModule, node: fx.Node) -> list[fx.Node]:
    """The inputs whose being never negative makes `node` never negative; [] when no such rule applies.
    A single one means `node` passes its input's sign on: a chain of such nodes is a single-input path."""
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        first = isinstance(module, _FIRST_INPUT_MODULES) and not (
            isinstance(module, nn.Hardtanh) and module.max_val < 0
        )
    elif node.op == "call_method":
        first = node.target in _FIRST_INPUT_METHODS
    else:
        first = node.target in _FIRST_INPUT_FUNCTIONS
    if first:
        source = node.args[0] if node.args else None
        return [source] if isinstance(source, fx.Node) else []
    if node.target in _CONCATENATIONS:
        return node.all_input_nodes
    if node.target in _ARITHMETIC:
        numbers = [a for a in (*node.args, *node.kwargs.values()) if isinstance(a, Number)]
        if any(number < 0 for number in numbers):
            return []
        return node.all_input_nodes
    return []


__all__ = ["never_negative", "non_negative_sources", "describe", "Producers"]
