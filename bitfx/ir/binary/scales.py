"""Weight scales of binary layers: one multiplier per output channel applied to sign(W).

Every scale returns a vector of length C_out (a per-layer scale is repeated), which the
deployed layer stores as the `scale` input of `bitfx.BinaryConv2d` / `bitfx.BinaryGemm`.

| name            | value per output channel o                   | gradient to W |
|-----------------|----------------------------------------------|---------------|
| `none`          | 1                                            | —             |
| `mean`          | mean\\|W_o\\| (XNOR-Net)                     | yes           |
| `mean_detached` | mean\\|W_o\\| (Bi-Real, ReActNet)            | no            |
| `layer_mean`    | mean\\|W\\| over the layer (DoReFa-Net)      | no            |
| `pow2`          | 2^round(log2 mean\\|W_o\\|) (IR-Net)         | no            |
| `learned`       | a parameter, initialised to mean\\|W_o\\| (XNOR++-style Γ) | (its own gradient) |
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def mean_abs_per_channel(weight: Tensor) -> Tensor:
    """mean|W| over everything but the output-channel axis (dim 0)."""
    return weight.abs().flatten(1).mean(dim=1)


class Scale(nn.Module):
    """A per-output-channel multiplier computed from (or learned next to) the weight."""

    name = "scale"
    detached = True  # True when no gradient flows from the scale into the weight

    def forward(self, weight: Tensor) -> Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return self.name


class NoScale(Scale):
    name = "none"

    def forward(self, weight: Tensor) -> Tensor:
        return torch.ones(weight.shape[0], dtype=weight.dtype, device=weight.device)


class MeanAbsScale(Scale):
    """mean|W| per output channel; with `detach=False` the gradient flows through it (XNOR-Net)."""

    def __init__(self, detach: bool) -> None:
        super().__init__()
        self.detached = detach
        self.name = "mean_detached" if detach else "mean"

    def forward(self, weight: Tensor) -> Tensor:
        scale = mean_abs_per_channel(weight)
        return scale.detach() if self.detached else scale


class LayerMeanAbsScale(Scale):
    """One detached mean|W| for the whole layer (DoReFa-Net's E(|W|))."""

    name = "layer_mean"

    def forward(self, weight: Tensor) -> Tensor:
        return weight.detach().abs().mean().expand(weight.shape[0]).clone()


class PowerOfTwoScale(Scale):
    """2^round(log2 mean|W_o|) per output channel, detached (IR-Net): a shift in fixed point."""

    name = "pow2"

    def forward(self, weight: Tensor) -> Tensor:
        return torch.exp2(torch.log2(mean_abs_per_channel(weight.detach())).round())


class LearnedScale(Scale):
    """A learnable per-channel scale Γ (XNOR++, Bulat & Tzimiropoulos 2019), initialised to mean|W_o|."""

    name = "learned"
    detached = False

    def __init__(self, initial: Tensor) -> None:
        super().__init__()
        self.value = nn.Parameter(initial.detach().clone())

    def forward(self, weight: Tensor) -> Tensor:
        return self.value


SCALE_NAMES = ("none", "mean", "mean_detached", "layer_mean", "pow2", "learned")


def make_scale(name: str, weight: Tensor) -> Scale:
    """The scale called `name` (one of `SCALE_NAMES`) for a layer with this latent weight."""
    makers = {
        "none": NoScale,
        "mean": lambda: MeanAbsScale(detach=False),
        "mean_detached": lambda: MeanAbsScale(detach=True),
        "layer_mean": LayerMeanAbsScale,
        "pow2": PowerOfTwoScale,
        "learned": lambda: LearnedScale(mean_abs_per_channel(weight)),
    }
    if name not in makers:
        raise ValueError(f"unknown scale {name!r}; choose one of {', '.join(SCALE_NAMES)}")
    return makers[name]()
