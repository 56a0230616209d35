"""PAMS quantizers: the IR vocabulary the `pams` pass introduces (Li et al., "PAMS: Quantized
Super-Resolution via Parameterized Max Scale", ECCV 2020).

Every quantizer is symmetric with zero point 0. With k bits, q = 2^(k−1) − 1 and the integer
range is [−q, q]:

- weights (`QuantConv1d/2d/3d`, `QuantLinear`): not learned. s_w = max|W| / q (per tensor, or
  per output channel), Ŵ = round(W / s_w) · s_w, with a straight-through round;
- activations (`ActQuant`): one learnable max scale α. s = α / q,
  x̂ = round(clamp(x, −α, α) / s) · s, straight-through round. Autograd then gives α the PAMS
  gradient: sign(x) where |x| ≥ α, (x̂ − x) / α inside the range.

The forward pass computes exactly what ONNX QuantizeLinear/DequantizeLinear compute with the
same float32 scale (round half to even, then multiply), so a lowered model can reproduce it.
All of these modules stay one node when captured (`bitfx_leaf`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MIN_BITS, MAX_BITS = 2, 8
MIN_SCALE = 1e-8  # keeps a scale positive when a tensor is all zeros


def qmax(bits: int) -> int:
    """The largest integer code of a symmetric `bits`-bit quantizer: 2^(bits−1) − 1."""
    if not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"bits must be between {MIN_BITS} and {MAX_BITS}, got {bits}")
    return 2 ** (bits - 1) - 1


def round_ste(x: Tensor) -> Tensor:
    """round(x) (half to even) in the forward pass, identity gradient in the backward pass."""
    return x + (torch.round(x) - x).detach()


class ActQuant(nn.Module):
    """PAMS activation quantizer with a learnable max scale α (a scalar parameter)."""

    bitfx_leaf = True

    def __init__(self, bits: int, alpha: float = 1.0) -> None:
        super().__init__()
        self.bits = bits
        self.q = qmax(bits)
        self.alpha = nn.Parameter(torch.tensor(float(alpha)))

    def effective_alpha(self) -> Tensor:
        """α as used in the forward pass (kept at least `MIN_SCALE`)."""
        return self.alpha.clamp_min(MIN_SCALE)

    def scale(self) -> Tensor:
        """The quantization step s = α / q."""
        return self.effective_alpha() / self.q

    def codes(self, x: Tensor) -> Tensor:
        """The integer codes in [−q, q] (as float) that `forward` multiplies by the step."""
        alpha = self.effective_alpha()
        return torch.round(torch.clamp(x, -alpha, alpha) / (alpha / self.q))

    def forward(self, x: Tensor) -> Tensor:
        alpha = self.effective_alpha()
        step = alpha / self.q
        return round_ste(torch.clamp(x, -alpha, alpha) / step) * step

    def extra_repr(self) -> str:
        return f"bits={self.bits}, alpha={float(self.alpha.detach()):.4g}"


class _WeightQuant:
    """Symmetric max-scale weight quantization shared by the quantized conv and linear layers."""

    weight: Tensor
    bits: int
    per_channel: bool

    def _init_quant(self, bits: int, per_channel: bool) -> None:
        self.bits = bits
        self.q = qmax(bits)
        self.per_channel = per_channel
        self.bitfx_storage_bits = {"weight": bits}

    def weight_scale(self) -> Tensor:
        """s_w = max|W| / q, a scalar or one value per output channel (not differentiated)."""
        w = self.weight.detach()
        peak = w.abs().flatten(1).amax(dim=1) if self.per_channel else w.abs().amax()
        return peak.clamp_min(MIN_SCALE * self.q) / self.q

    def _broadcast(self, scale: Tensor) -> Tensor:
        return scale.reshape(-1, *([1] * (self.weight.dim() - 1))) if scale.dim() else scale

    def weight_codes(self) -> Tensor:
        """round(W / s_w): the integer weights in [−q, q] (as float)."""
        return torch.round(self.weight.detach() / self._broadcast(self.weight_scale()))

    def quantized_weight(self) -> Tensor:
        """Ŵ = round(W / s_w) · s_w with a straight-through round."""
        scale = self._broadcast(self.weight_scale())
        return round_ste(self.weight / scale) * scale

    def _quant_repr(self) -> str:
        return f"bits={self.bits}, per_channel={self.per_channel}"


class _QuantLayer(_WeightQuant):
    """Cooperative base of the quantized layers: takes `bits` and `per_channel` after the
    float layer's own arguments and stays one graph node (`bitfx_leaf`)."""

    bitfx_leaf = True

    def __init__(self, *args: Any, bits: int = 8, per_channel: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._init_quant(bits, per_channel)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self._quant_repr()}"


class _QuantConv(_QuantLayer):
    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.quantized_weight(), self.bias)


class QuantConv1d(_QuantConv, nn.Conv1d):
    """Conv1d with PAMS-quantized weights (float bias)."""


class QuantConv2d(_QuantConv, nn.Conv2d):
    """Conv2d with PAMS-quantized weights (float bias)."""


class QuantConv3d(_QuantConv, nn.Conv3d):
    """Conv3d with PAMS-quantized weights (float bias)."""


class QuantLinear(_QuantLayer, nn.Linear):
    """Linear with PAMS-quantized weights (float bias)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.quantized_weight(), self.bias)


QUANTIZED_LAYERS: dict[type[nn.Module], type[nn.Module]] = {
    nn.Conv1d: QuantConv1d,
    nn.Conv2d: QuantConv2d,
    nn.Conv3d: QuantConv3d,
    nn.Linear: QuantLinear,
}
QUANT_LAYER_TYPES = (QuantConv1d, QuantConv2d, QuantConv3d, QuantLinear)


def quantize_layer(layer: nn.Module, bits: int, per_channel: bool) -> nn.Module:
    """The quantized twin of a float Conv1d/2d/3d or Linear (or a subclass), sharing its weight and bias."""
    cls = next(twin for base, twin in QUANTIZED_LAYERS.items() if isinstance(layer, base))
    factory = {"device": layer.weight.device, "dtype": layer.weight.dtype}
    has_bias = layer.bias is not None
    if isinstance(layer, nn.Linear):
        twin = cls(layer.in_features, layer.out_features, has_bias, bits=bits, per_channel=per_channel, **factory)
    else:
        twin = cls(
            layer.in_channels,
            layer.out_channels,
            layer.kernel_size,
            layer.stride,
            layer.padding,
            layer.dilation,
            layer.groups,
            has_bias,
            layer.padding_mode,
            bits=bits,
            per_channel=per_channel,
            **factory,
        )
    twin.weight = layer.weight
    twin.bias = layer.bias
    return twin.train(layer.training)
