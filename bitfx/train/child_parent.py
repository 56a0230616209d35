"""The kernel-level Child-Parent loss of CP-NAS (Li et al., "CP-NAS: Child-Parent Neural Architecture
Search for 1-bit CNNs", IJCAI 2020): a binary network (child) is trained with its quantized kernels
pulled towards the float kernels of a full-precision network of the same architecture (parent).

    loss = weight · Σ_l mean((W_P^l − q_l(W_C^l))²)

over every binary layer l of the child (`BinaryConv2d`, `BinaryLinear` and their subclasses, e.g.
RBNN's rotated convolution) whose qualified name is a float `nn.Conv2d` / `nn.Linear` of the parent
with the same kernel shape; `binarize` (and `rotate`) keep the names of the layers they replace,
so the float model a pipeline started from is a parent. q_l is the layer's own weight quantizer
(scale ⊙ sign(T(W)), whatever the scheme), so the gradient reaches the child's latent weights
(and learned scales) exactly as the layer's training gradient does, through its own estimator; for
RBNN's rotated convolution that means its angle and scale, the rotated weight being detached. The
parent's kernels are targets: no gradient flows into the parent.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bitfx.ir.binary import BinaryLayer

_FLOAT_LAYERS = (nn.Conv2d, nn.Linear)


class ChildParentLoss:
    """Kernel distance between a binary `child` and its float `parent`; call it (no arguments) for the loss.

    `paired` lists the qualified names of the layers that contribute; `unpaired` maps every other
    binary layer of the child to the reason it has no float counterpart."""

    def __init__(self, parent: nn.Module, child: nn.Module, weight: float = 1.0) -> None:
        if weight < 0:
            raise ValueError(f"the Child-Parent loss weight must be ≥ 0, got {weight}")
        parent_modules = dict(parent.named_modules())
        self.weight = weight
        self.pairs: list[tuple[str, nn.Module, BinaryLayer]] = []
        self.unpaired: dict[str, str] = {}
        for name, layer in child.named_modules():
            if not isinstance(layer, BinaryLayer):
                continue
            reason = _mismatch(parent_modules.get(name), layer)
            if reason:
                self.unpaired[name] = reason
            else:
                self.pairs.append((name, parent_modules[name], layer))
        if not self.pairs:
            found = "; ".join(f"{name}: {why}" for name, why in self.unpaired.items()) or "it has no binary layers"
            raise ValueError(f"Child-Parent loss: no binary layer of the child pairs with a float one ({found})")

    @property
    def paired(self) -> list[str]:
        return [name for name, _, _ in self.pairs]

    def __call__(self) -> Tensor:
        total = sum(self.layer_distance(parent, child) for _, parent, child in self.pairs)
        return self.weight * total

    @staticmethod
    def layer_distance(parent: nn.Module, child: BinaryLayer) -> Tensor:
        """mean((W_P − q(W_C))²) for one pair, differentiable in the child's latent weight."""
        return (parent.weight.detach() - child.weight_quantizer(child.weight)).pow(2).mean()

    @torch.no_grad()
    def kernel_errors(self) -> dict[str, float]:
        """The per-layer distance, for reports (e.g. the kernel reconstruction error over training)."""
        return {name: self.layer_distance(parent, child).item() for name, parent, child in self.pairs}

    def __repr__(self) -> str:
        return f"ChildParentLoss(weight={self.weight}, paired={self.paired}, unpaired={self.unpaired})"


def _mismatch(parent_layer: nn.Module | None, child_layer: BinaryLayer) -> str:
    """Why `parent_layer` cannot be the float counterpart of `child_layer` ('' when it can)."""
    if parent_layer is None:
        return "no module of that name in the parent"
    if not isinstance(parent_layer, _FLOAT_LAYERS):
        return f"the parent's module is a {type(parent_layer).__name__}, not a float Conv2d or Linear"
    if parent_layer.weight.shape != child_layer.weight.shape:
        parent_shape, child_shape = tuple(parent_layer.weight.shape), tuple(child_layer.weight.shape)
        return f"kernel shapes differ: parent {parent_shape}, child {child_shape}"
    return ""
