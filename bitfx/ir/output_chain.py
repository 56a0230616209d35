"""The elementwise ops that may sit between a quantized layer and the quantizer of its output.

A chain is `layer → (× scalar)* → ReLU?`, each op the only user of the one before. Integer
execution folds such a chain: the scalars multiply the layer's weight scale and bias, and a
ReLU in front of a symmetric quantizer (zero point 0) only raises the lowest code from −q to
0, because round(max(x, 0) / s) = max(round(x / s), 0). EDSR's residual scaling
(`conv(x) * res_scale`) and conv-ReLU pairs are such chains. The `pams` pass and the `qdq`
lowering use this one definition, so what the pass places the lowering can fold.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import fx

from bitfx.ir.rewrite import is_relu, only_user

_MUL_FUNCTIONS = (operator.mul, torch.mul)
_DIV_FUNCTIONS = (operator.truediv, torch.div, torch.true_divide)


@dataclass(frozen=True)
class OutputChain:
    """A layer node, the chain of scalar multiplications and ReLU after it, and what they amount to."""

    layer: fx.Node
    nodes: tuple[fx.Node, ...]
    factor: float
    relu: bool

    @property
    def end(self) -> fx.Node:
        """The last node of the chain (the layer itself when the chain is empty)."""
        return self.nodes[-1] if self.nodes else self.layer


def scalar_factor(node: fx.Node) -> float | None:
    """The constant a node multiplies its one tensor input by (`x * 0.1`, `x / 2`), else None."""
    if node.kwargs or len(node.args) != 2:
        return None
    first, second = node.args
    is_mul = (node.op == "call_function" and node.target in _MUL_FUNCTIONS) or (
        node.op == "call_method" and node.target == "mul"
    )
    is_div = (node.op == "call_function" and node.target in _DIV_FUNCTIONS) or (
        node.op == "call_method" and node.target == "div"
    )
    if is_mul:
        number = second if isinstance(first, fx.Node) else first
        tensor = first if isinstance(first, fx.Node) else second
        factor = number
    elif is_div and isinstance(first, fx.Node):
        tensor, number = first, second
        factor = 1 / number if _is_number(number) and number != 0 else None
    else:
        return None
    if (
        not isinstance(tensor, fx.Node)
        or not _is_number(number)
        or factor is None
        or factor == 0
        or not math.isfinite(factor)
    ):
        return None
    return float(factor)


def tensor_input(node: fx.Node) -> fx.Node:
    """The tensor operand of a scalar multiplication or ReLU node."""
    return next(arg for arg in node.args if isinstance(arg, fx.Node))


def chain_after(gm: fx.GraphModule, layer: fx.Node) -> OutputChain:
    """The longest foldable chain that follows `layer`."""
    nodes: list[fx.Node] = []
    factor, relu, current = 1.0, False, layer
    while (user := only_user(current)) is not None and not relu:
        step = scalar_factor(user)
        if step is not None and tensor_input(user) is current:
            factor *= step
        elif is_relu(gm, user) and tensor_input(user) is current:
            relu = True
        else:
            break
        nodes.append(user)
        current = user
    return OutputChain(layer, tuple(nodes), factor, relu)


def chain_before(gm: fx.GraphModule, node: fx.Node, is_layer: Callable[[fx.Node], bool]) -> OutputChain | None:
    """The chain that ends at `node` and starts at a node for which `is_layer` holds, or None.

    Every node of the chain before `node`, the layer included, must have exactly one user
    (`node` itself may have several: check that separately when folding).
    """
    nodes: list[fx.Node] = []
    factor, relu, current = 1.0, False, node
    if is_relu(gm, current):
        relu = True
        nodes.append(current)
        current = tensor_input(current)
    while (step := scalar_factor(current)) is not None:
        factor *= step
        nodes.append(current)
        current = tensor_input(current)
    if not is_layer(current) or any(len(n.users) != 1 for n in (current, *nodes) if n is not node):
        return None
    return OutputChain(current, tuple(reversed(nodes)), factor, relu)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
