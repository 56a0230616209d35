"""Trainable binary layers: `BinaryConv2d` and `BinaryLinear`.

Each keeps a latent float weight (and bias) and is configured by a weight quantizer
(scale, estimator, standardisation), an activation quantizer (or None: W1A32) and, for
convolutions, the padding value: 0 pads like PyTorch (padded positions contribute 0, which
1-bit hardware must correct) and ±1 pads with that value ("one padding", free in packed bits).

Forward runs one of two paths that compute the same values:
- when a gradient is needed (training), a differentiable path: quantizers with their
  estimators, then `F.conv2d` / `F.linear` with the effective weight scale ⊙ sign(W);
- otherwise (evaluation, checks, export) its deployed form, i.e. the `bitfx::binary_conv2d` /
  `bitfx::binary_gemm` op on the deployed tensors: exactly what the ONNX lowerings and the
  packed runtime run. In eval mode the deployed form is built once and reused until the
  layer's state changes (`bitfx.ir.binary.deploy_cache`); in training mode it is rebuilt.

`deployed()` returns the fixed-tensor form (`bitfx.ir.binary.deployed`) that lowerings export.

A BatchNorm folded into the layer (`fold_output_affine`, used by `fuse_bn`) becomes an
`output_scale` buffer m (per output channel) and a new bias: the layer computes
m ⊙ scale ⊙ (sign(W) * sign(x)) + bias, so the deployed scale is m ⊙ scale.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bitfx.ir.binary.deploy_cache import DeployedCache
from bitfx.ir.binary.deployed import ConvGeometry, DeployedBinaryConv2d, DeployedBinaryLinear
from bitfx.ir.binary.ops import PAD_VALUES
from bitfx.ir.binary.quantizers import WeightBinarizer
from bitfx.ir.protocol import TrainingHooks, deployed_input


class BinaryLayer(nn.Module, TrainingHooks):
    """What binary conv and linear layers share: latent weight and bias, quantizers, deployment."""

    bitfx_leaf = True
    bitfx_storage_bits = {"weight": 1}

    def __init__(
        self, weight: Tensor, bias: Tensor | None, weight_quantizer: WeightBinarizer, input_quantizer: nn.Module | None
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone())
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone())
        self.weight_quantizer = weight_quantizer
        self.input_quantizer = input_quantizer
        self._deployed_cache = DeployedCache()
        self.register_buffer("output_scale", None)  # set when a BatchNorm is folded in

    @property
    def binarize_input(self) -> bool:
        """False for W1A32 layers, whose activations stay real."""
        return self.input_quantizer is not None

    def deploy_tensors(self) -> tuple[Tensor, Tensor, Tensor]:
        """(sign(W) as ±1, scale, bias), detached."""
        signs, scale = self.weight_quantizer.deploy(self.weight)
        if self.output_scale is not None:
            scale = scale * self.output_scale
        bias = torch.zeros_like(scale) if self.bias is None else self.bias.detach().clone()
        return signs, scale, bias

    @torch.no_grad()
    def fold_output_affine(self, multiplier: Tensor, shift: Tensor) -> None:
        """Make the layer compute multiplier ⊙ y + shift (per output channel) where it computed y."""
        multiplier = multiplier.to(self.weight.dtype)
        if self.output_scale is None:
            self.output_scale = multiplier.detach().clone()
        else:
            self.output_scale.mul_(multiplier)
        bias = torch.zeros_like(multiplier) if self.bias is None else self.bias.detach()
        new_bias = (bias * multiplier + shift.to(self.weight.dtype)).detach().clone()
        if self.bias is None:
            self.bias = nn.Parameter(new_bias)
        else:
            self.bias.copy_(new_bias)

    def effective_weight(self) -> Tensor:
        """The weight training convolves with: the quantizer's scale ⊙ sign(W), times `output_scale`."""
        weight = self.weight_quantizer(self.weight)
        if self.output_scale is None:
            return weight
        return weight * self.output_scale.view(-1, *([1] * (weight.dim() - 1)))

    def deployed_input(self) -> nn.Module | None:
        """What the deployed layer applies to x before the op (its sign), e.g. RSign's shift."""
        return None if self.input_quantizer is None else deployed_input(self.input_quantizer)

    def train(self, mode: bool = True) -> BinaryLayer:
        self._deployed_cache.clear()
        return super().train(mode)

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> BinaryLayer:
        self._deployed_cache.clear()
        return super()._apply(fn, recurse)

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self._deployed_cache.clear()
        super()._load_from_state_dict(*args, **kwargs)

    def _run_deployed(self, x: Tensor) -> Tensor:
        """The deployed form applied to x: cached in eval mode, built afresh in training mode."""
        form = self.deployed() if self.training else self._deployed_cache.get(self, self.deployed)
        return form(x)

    def after_optimizer_step(self) -> None:
        if self.weight_quantizer.clip_latent:
            with torch.no_grad():
                self.weight.clamp_(-1, 1)

    def _needs_grad(self, x: Tensor) -> bool:
        return torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in self.parameters()))

    def _quantize_input(self, x: Tensor) -> Tensor:
        return x if self.input_quantizer is None else self.input_quantizer(x)


class BinaryConv2d(BinaryLayer):
    """A 2-D convolution with 1-bit weights (and activations, unless W1A32); see the module docstring."""

    def __init__(
        self,
        weight: Tensor,
        bias: Tensor | None,
        weight_quantizer: WeightBinarizer,
        input_quantizer: nn.Module | None,
        *,
        stride: tuple[int, int] = (1, 1),
        padding: tuple[int, int] = (0, 0),
        dilation: tuple[int, int] = (1, 1),
        groups: int = 1,
        pad_value: int = 0,
    ) -> None:
        super().__init__(weight, bias, weight_quantizer, input_quantizer)
        if pad_value not in PAD_VALUES:
            raise ValueError(f"pad_value must be one of {PAD_VALUES}, got {pad_value}")
        self.stride, self.padding, self.dilation = tuple(stride), tuple(padding), tuple(dilation)
        self.groups, self.pad_value = groups, pad_value

    @classmethod
    def from_conv(
        cls,
        conv: nn.Conv2d,
        weight_quantizer: WeightBinarizer,
        input_quantizer: nn.Module | None,
        *,
        pad_value: int = 0,
    ) -> BinaryConv2d:
        """A binary layer starting from `conv`'s weights (copied) and geometry."""
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError(
                "only zero padding given as numbers is supported, "
                f"not padding={conv.padding!r}, padding_mode={conv.padding_mode!r}"
            )
        return cls(
            conv.weight,
            conv.bias,
            weight_quantizer,
            input_quantizer,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            groups=conv.groups,
            pad_value=pad_value,
        )

    @property
    def in_channels(self) -> int:
        return self.weight.shape[1] * self.groups

    @property
    def out_channels(self) -> int:
        return self.weight.shape[0]

    @property
    def geometry(self) -> ConvGeometry:
        height, width = self.padding
        return ConvGeometry(
            kernel_shape=tuple(self.weight.shape[2:]),
            strides=self.stride,
            pads=(height, width, height, width),
            dilations=self.dilation,
            group=self.groups,
            in_channels=self.in_channels,
            pad_value=self.pad_value,
            binarize_input=self.binarize_input,
        )

    def forward(self, x: Tensor) -> Tensor:
        if not self._needs_grad(x):
            return self._run_deployed(x)
        activations = self._quantize_input(x)
        height, width = self.padding
        if height or width:
            activations = F.pad(activations, (width, width, height, height), value=float(self.pad_value))
        return F.conv2d(activations, self.effective_weight(), self.bias, self.stride, 0, self.dilation, self.groups)

    def deployed(self) -> DeployedBinaryConv2d:
        return DeployedBinaryConv2d(self.geometry, *self.deploy_tensors(), self.deployed_input())

    def bitfx_macs(self, output_shape: tuple[int, ...]) -> int:
        """Binary multiply-accumulates per sample."""
        return math.prod(output_shape[1:]) * self.weight[0].numel()

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={tuple(self.weight.shape[2:])}, "
            f"stride={self.stride}, padding={self.padding}, groups={self.groups}, pad_value={self.pad_value}"
        )


class BinaryLinear(BinaryLayer):
    """A linear layer (N×K input) with 1-bit weights (and activations, unless W1A32)."""

    @classmethod
    def from_linear(
        cls, linear: nn.Linear, weight_quantizer: WeightBinarizer, input_quantizer: nn.Module | None
    ) -> BinaryLinear:
        """A binary layer starting from `linear`'s weights (copied)."""
        return cls(linear.weight, linear.bias, weight_quantizer, input_quantizer)

    def forward(self, x: Tensor) -> Tensor:
        if not self._needs_grad(x):
            return self._run_deployed(x)
        return F.linear(self._quantize_input(x), self.effective_weight(), self.bias)

    def deployed(self) -> DeployedBinaryLinear:
        return DeployedBinaryLinear(self.binarize_input, *self.deploy_tensors(), self.deployed_input())

    def bitfx_macs(self, output_shape: tuple[int, ...]) -> int:
        return math.prod(output_shape[1:]) * self.weight.shape[1]

    def extra_repr(self) -> str:
        return f"{self.weight.shape[1]}, {self.weight.shape[0]}"
