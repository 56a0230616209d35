"""Quantizers of binary layers: latent weights → scale·sign(W), activations → sign(x).

A weight quantizer gives training the effective weight (a differentiable function of the
latent float weight) and gives deployment the pair (sign(W), scale) that the `bitfx` ONNX
ops store. An activation quantizer gives training ±1 activations with its estimator
(`forward`) and gives deployment the module applied to x before the op's own sign
(`deployed_input()`: None for plain sign, a per-channel shift for RSign; a scheme that
normalises activations returns its normaliser). A layer without an activation quantizer
keeps real activations (W1A32).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bitfx.ir.binary.estimators import Estimator
from bitfx.ir.binary.scales import Scale
from bitfx.ir.binary.sign import binary_sign, sign_with, straight_through


def _per_channel(vector: Tensor, like: Tensor) -> Tensor:
    """`vector` (length C) shaped to broadcast along dim 1 of `like` (N×C×…) or dim 0 of a weight."""
    return vector.view(1, -1, *([1] * (like.dim() - 2)))


def standardize_filters(weight: Tensor) -> Tensor:
    """Each output filter shifted to zero mean and divided by its (unbiased) standard deviation."""
    flat = weight.flatten(1)
    centred = flat - flat.mean(dim=1, keepdim=True)
    return (centred / centred.std(dim=1, keepdim=True).clamp_min(1e-12)).view_as(weight)


class WeightBinarizer(nn.Module):
    """Latent weight W → effective weight scale ⊙ sign(T(W)) with a chosen backward.

    - `standardize`: T(W) standardises each output filter to zero mean, unit (unbiased)
      standard deviation (IR-Net's Libra-PB); otherwise T is the identity.
    - `scale`: the per-output-channel multiplier (`bitfx.ir.binary.scales`).
    - `estimator`: the derivative used for sign.
    - `gradient_skips_scale`: the gradient of the effective weight reaches T(W) straight,
      times the estimator, as in Bi-Real/ReActNet (`α·sign(W)` detached plus the clamp
      trick) and DoReFa; otherwise autograd differentiates scale·sign (XNOR-Net, IR-Net).
    - `clip_latent`: after each optimizer step the latent weight is clipped to [−1, 1] (BNN).
    """

    def __init__(
        self,
        scale: Scale,
        estimator: Estimator,
        *,
        standardize: bool = False,
        gradient_skips_scale: bool = False,
        clip_latent: bool = False,
    ) -> None:
        super().__init__()
        if gradient_skips_scale and not scale.detached:
            raise ValueError(
                f"scale {scale.name!r} takes a gradient, so the gradient cannot skip it; use gradient_skips_scale=False"
            )
        self.scale, self.estimator = scale, estimator
        self.standardize, self.gradient_skips_scale, self.clip_latent = standardize, gradient_skips_scale, clip_latent

    def transform(self, weight: Tensor) -> Tensor:
        """T(W): the standardised filters, or W itself."""
        return standardize_filters(weight) if self.standardize else weight

    def forward(self, weight: Tensor) -> Tensor:
        """The effective weight scale ⊙ sign(T(W)) used in training."""
        transformed = self.transform(weight)
        scale = self.scale(transformed).view(-1, *([1] * (weight.dim() - 1)))
        if self.gradient_skips_scale:
            return straight_through(scale * binary_sign(transformed), transformed, self.estimator)
        return scale * sign_with(transformed, self.estimator)

    @torch.no_grad()
    def deploy(self, weight: Tensor) -> tuple[Tensor, Tensor]:
        """(sign(T(W)) as ±1 floats, scale per output channel)."""
        transformed = self.transform(weight)
        return binary_sign(transformed), self.scale(transformed).detach().clone()

    def extra_repr(self) -> str:
        flags = [name for name in ("standardize", "gradient_skips_scale", "clip_latent") if getattr(self, name)]
        return ", ".join(flags)


class SignActivation(nn.Module):
    """sign(x) with a backward estimator (BNN, XNOR-Net, Bi-Real, IR-Net)."""

    def __init__(self, estimator: Estimator) -> None:
        super().__init__()
        self.estimator = estimator

    def forward(self, x: Tensor) -> Tensor:
        return sign_with(x, self.estimator)

    def deployed_input(self) -> nn.Module | None:
        """What deployment applies to x before sign (nothing here)."""
        return None


class RSign(nn.Module):
    """ReActNet's RSign: sign(x − β_c) with a learnable threshold β per input channel (Liu et al., ECCV 2020)."""

    def __init__(self, channels: int, estimator: Estimator) -> None:
        super().__init__()
        self.estimator = estimator
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        return sign_with(x - _per_channel(self.beta, x), self.estimator)

    def deployed_input(self) -> nn.Module | None:
        return ShiftChannels(self.beta)


class ShiftChannels(nn.Module):
    """x − shift_c along dim 1: RSign's threshold in a deployed layer (an ONNX `Sub`)."""

    def __init__(self, shift: Tensor) -> None:
        super().__init__()
        self.register_buffer("shift", shift.detach().clone())

    def forward(self, x: Tensor) -> Tensor:
        return x - _per_channel(self.shift, x)
