"""RBNN's binary convolution: rotated, adjustable weights with learnable scale (Lin et al.,
"Rotated Binary Neural Network", NeurIPS 2020).

For a layer with latent weight W (C_out×C_in×kh×kw), n = C_in·kh·kw = a·b:

    w2 = W standardised per filter                        (zero mean, unit unbiased std)
    w̃  = R1ᵀ X R2 for each filter X = w2 as an a×b matrix  (no gradient: detached)
    w3 = w2 + |sin θ| · (w̃ − w2)                          (θ learnable per output channel, starts at π/2)
    y  = α ⊙ conv(sign(a2), sign(w3)) + bias              (α learnable per output channel, starts at mean|W|)

a2 is the input standardised per sample over (C, H, W) (`StandardizedSign`, the input
quantizer the `rotate` pass gives by default, as the authors' released code does), or the
raw input for layers whose input quantizer cannot take it (real inputs, RSign's threshold).
sign's backward is `TrainingAwareSign`; R1, R2 are updated by
`bitfx.ir.binary.rotation.procrustes_update` at the start of every epoch (the
`bitfx.train.on_epoch_start` hook), identically on every torch.distributed rank.

Deployment bakes the rotation: sign(w3) and α are fixed tensors, so the deployed layer is an
ordinary `DeployedBinaryConv2d`. With `StandardizedSign` its input transform subtracts the
per-sample mean (sign((x − μ)/σ) = sign(x − μ)): one ReduceMean and one Sub per layer.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from bitfx.errors import BitfxError
from bitfx.ir.binary.estimators import Estimator
from bitfx.ir.binary.layers import BinaryConv2d
from bitfx.ir.binary.quantizers import WeightBinarizer, standardize_filters
from bitfx.ir.binary.rotation import (
    as_filter_matrices,
    binarization_error,
    broadcast_from_first_rank,
    factor_pair,
    procrustes_update,
    rotate_filters,
)
from bitfx.ir.binary.scales import make_scale
from bitfx.ir.binary.sign import sign_with
from bitfx.ir.distributed import agree
from bitfx.ir.protocol import TrainingHooks

T_MIN, T_MAX = 1e-2, 10.0


class TrainingAwareSign(Estimator, TrainingHooks):
    """RBNN's training-aware approximation of sign: derivative max(0, k·(√2·t − t²·|x|)).

    Over epoch e of E, t = 10^(log10 t_min + (log10 t_max − log10 t_min)·e/E). For weights
    k = max(1/t, 1): a wide, flat window (≈ the STE) early, close to sign's own derivative
    late. For activations (`activations=True`) k = 1 and t is raised to at least 1.
    """

    name = "training_aware_sign"

    def __init__(self, *, activations: bool = False, t_min: float = T_MIN, t_max: float = T_MAX) -> None:
        super().__init__()
        if not 0 < t_min <= t_max:
            raise ValueError(f"the training-aware sign needs 0 < t_min ≤ t_max, got t_min={t_min}, t_max={t_max}")
        self.activations, self.t_min, self.t_max = activations, t_min, t_max
        self._set(t_min)

    def _set(self, t: float) -> None:
        self.t, self.k = (max(t, 1.0), 1.0) if self.activations else (t, max(1 / t, 1.0))

    def derivative(self, x: Tensor) -> Tensor:
        return (self.k * (math.sqrt(2) * self.t - self.t**2 * x.abs())).clamp(min=0)

    def on_epoch_start(self, epoch: int, epochs: int) -> dict[str, float]:
        low, high = math.log10(self.t_min), math.log10(self.t_max)
        self._set(10 ** (low + (high - low) * epoch / epochs))
        return {"t": self.t, "k": self.k}

    def extra_repr(self) -> str:
        return f"{'activations' if self.activations else 'weights'}, t={self.t:.3g}, k={self.k:.3g}"


class RotatedWeightBinarizer(WeightBinarizer):
    """Latent W → α ⊙ sign(w3), with w3 the adjustable rotated weight of the module docstring.

    Buffers `left_rotation` (R1, a×a) and `right_rotation` (R2, b×b); parameters `angle`
    (θ, by default π/2 for every output channel) and `scale.value` (α). `update_rotation(W)`
    runs `iterations` Procrustes steps.
    """

    def __init__(
        self,
        weight: Tensor,
        left_rotation: Tensor,
        right_rotation: Tensor,
        *,
        angle: Tensor | None = None,
        iterations: int = 3,
        t_min: float = T_MIN,
        t_max: float = T_MAX,
    ) -> None:
        super().__init__(
            make_scale("learned", weight.detach()), TrainingAwareSign(t_min=t_min, t_max=t_max), standardize=True
        )
        self.shape = factor_pair(weight[0].numel())
        if tuple(left_rotation.shape) != (self.shape[0],) * 2 or tuple(right_rotation.shape) != (self.shape[1],) * 2:
            raise ValueError(
                f"filters of {weight[0].numel()} weights are {self.shape[0]}×{self.shape[1]} matrices: "
                f"R1 must be {self.shape[0]}×{self.shape[0]} and R2 {self.shape[1]}×{self.shape[1]}, "
                f"got {tuple(left_rotation.shape)} and {tuple(right_rotation.shape)}"
            )
        if iterations < 0:
            raise ValueError(f"iterations must be ≥ 0, got {iterations}")
        self.iterations = iterations
        self.register_buffer("left_rotation", left_rotation.detach().to(weight).clone())
        self.register_buffer("right_rotation", right_rotation.detach().to(weight).clone())
        if angle is None:
            angle = torch.full((weight.shape[0],), math.pi / 2)
        if tuple(angle.shape) != (weight.shape[0],):
            raise ValueError(
                f"θ needs one angle per output channel ({weight.shape[0]}), got shape {tuple(angle.shape)}"
            )
        self.angle = nn.Parameter(angle.detach().to(weight).clone())

    def filter_matrices(self, weight: Tensor) -> Tensor:
        """The standardised filters of `weight`, detached, as C_out a×b matrices."""
        return as_filter_matrices(standardize_filters(weight.detach()), *self.shape)

    def transform(self, weight: Tensor) -> Tensor:
        """w3 = w2 + |sin θ|·(detach(R1ᵀ X R2) − w2)."""
        standardized = standardize_filters(weight)
        rotated = rotate_filters(self.filter_matrices(weight), self.left_rotation, self.right_rotation).view_as(weight)
        mix = self.angle.sin().abs().view(-1, *([1] * (weight.dim() - 1)))
        return standardized + mix * (rotated - standardized)

    @torch.no_grad()
    def update_rotation(self, weight: Tensor) -> dict[str, float]:
        """Procrustes steps on the current filters; every rank ends with rank 0's result (when
        the update fails on any rank, e.g. on NaN weights, every rank raises the same error).
        Returns E(R1, R2) per weight before and after, for logging."""
        matrices = self.filter_matrices(weight)
        before = binarization_error(matrices, self.left_rotation, self.right_rotation) / matrices.numel()
        failure = None
        try:
            if not bool(torch.isfinite(matrices).all()):
                raise BitfxError("the binary conv weights hold NaN or Inf; training diverged")
            left, right = procrustes_update(matrices, self.left_rotation, self.right_rotation, self.iterations)
        except Exception as error:
            failure = error
        agree(failure, BitfxError, "the rotation update")
        self.left_rotation.copy_(left)
        self.right_rotation.copy_(right)
        broadcast_from_first_rank(self.left_rotation, self.right_rotation)
        after = binarization_error(matrices, self.left_rotation, self.right_rotation) / matrices.numel()
        return {"rotation_error_before": before, "rotation_error": after}

    def extra_repr(self) -> str:
        a, b = self.shape
        return f"R1 {a}×{a}, R2 {b}×{b}, iterations={self.iterations}"


def standardize_samples(x: Tensor) -> Tensor:
    """Each sample shifted to zero mean and divided by its (unbiased) std over (C, H, W)."""
    centred = center_samples(x)
    return centred / centred.flatten(1).std(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))


def center_samples(x: Tensor) -> Tensor:
    """Each sample minus its mean over (C, H, W)."""
    return x - x.mean(dim=tuple(range(1, x.dim())), keepdim=True)


class SampleCentering(nn.Module):
    """x − its mean over (C, H, W), per sample: what deployment keeps of RBNN's activation
    standardisation, since dividing by the std cannot change a sign."""

    def forward(self, x: Tensor) -> Tensor:
        return center_samples(x)


class StandardizedSign(nn.Module):
    """sign((x − μ)/σ), μ and σ the mean and std of each sample over (C, H, W), with a
    backward estimator: RBNN's activation quantizer (the authors' released CIFAR and ImageNet code)."""

    def __init__(self, estimator: Estimator) -> None:
        super().__init__()
        self.estimator = estimator

    def forward(self, x: Tensor) -> Tensor:
        return sign_with(standardize_samples(x), self.estimator)

    def deployed_input(self) -> nn.Module:
        return SampleCentering()


class RotatedBinaryConv2d(BinaryConv2d):
    """A `BinaryConv2d` whose weight quantizer is a `RotatedWeightBinarizer`, updated at every epoch start."""

    weight_quantizer: RotatedWeightBinarizer

    @classmethod
    def from_binary_conv(
        cls, layer: BinaryConv2d, weight_quantizer: RotatedWeightBinarizer, input_quantizer: nn.Module | None
    ) -> RotatedBinaryConv2d:
        """A rotated layer with `layer`'s latent weight, bias, folded output scale and geometry (copied)."""
        rotated = cls(
            layer.weight,
            layer.bias,
            weight_quantizer,
            input_quantizer,
            stride=layer.stride,
            padding=layer.padding,
            dilation=layer.dilation,
            groups=layer.groups,
            pad_value=layer.pad_value,
        ).train(layer.training)
        if layer.output_scale is not None:
            rotated.output_scale = layer.output_scale.detach().clone()
        return rotated

    def on_epoch_start(self, epoch: int, epochs: int) -> dict[str, float]:
        """The rotation update of the epoch (a collective under torch.distributed)."""
        if self.weight_quantizer.iterations == 0:
            return {}
        return self.weight_quantizer.update_rotation(self.weight)
