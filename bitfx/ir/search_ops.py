"""Candidate operations of cell search spaces (DARTS, BNAS, CP-NAS, ABanditNAS), from standard layers.

`OPS[name](channels, stride)` makes the operation of an edge; every operation maps C channels
to C channels and divides the spatial size by `stride`. Convolutions are plain `nn.Conv2d`
(ReLU → conv → BatchNorm), so `binarize` turns them 1-bit like in any other model.

| name            | operation                                                                 |
|-----------------|---------------------------------------------------------------------------|
| none            | zeros (strided)                                                           |
| skip_connect    | identity; `FactorizedReduce` when stride 2                                |
| max/avg_pool_3x3| 3×3 pooling, padding 1 (average excludes the padding)                     |
| sep_conv_k      | twice: ReLU, depthwise k×k, pointwise 1×1, BN (DARTS)                     |
| dil_conv_k      | ReLU, depthwise k×k dilation 2, pointwise 1×1, BN (DARTS)                 |
| conv_k          | ReLU, full k×k conv dilation 2, BN (ABanditNAS's "conv with rate 2")       |
| gab_filt_3x3    | denoising block around a learnable per-channel Gabor filter (ABanditNAS)  |
| dtp_blok_3x3    | denoising block around a dot-product non-local filter (ABanditNAS)        |

Denoising block: y = x + BN(filter(x)) with BN's γ and β starting at 0 (the block starts as
the identity), bilinear down-sampling first when stride 2.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


class ReLUConvBN(nn.Sequential):
    """ReLU → Conv2d (no bias) → BatchNorm."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, dilation: int = 1) -> None:
        super().__init__(
            nn.ReLU(),
            nn.Conv2d(c_in, c_out, kernel, stride, padding, dilation=dilation, bias=False),
            nn.BatchNorm2d(c_out),
        )


class DilConv(nn.Sequential):
    """ReLU → depthwise k×k (dilated) → pointwise 1×1 → BatchNorm."""

    def __init__(self, c: int, kernel: int, stride: int, padding: int, dilation: int) -> None:
        super().__init__(
            nn.ReLU(),
            nn.Conv2d(c, c, kernel, stride, padding, dilation=dilation, groups=c, bias=False),
            nn.Conv2d(c, c, 1, bias=False),
            nn.BatchNorm2d(c),
        )


class SepConv(nn.Sequential):
    """Two `DilConv`s with dilation 1, the first strided."""

    def __init__(self, c: int, kernel: int, stride: int, padding: int) -> None:
        super().__init__(DilConv(c, kernel, stride, padding, 1), DilConv(c, kernel, 1, padding, 1))


class Zero(nn.Module):
    """The "none" operation: zeros of the strided input's shape."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, :: self.stride, :: self.stride] * 0.0


class FactorizedReduce(nn.Module):
    """Halve the spatial size with two 1×1 stride-2 convs on offset grids, concatenated, then BN."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.relu = nn.ReLU()
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out - c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        shifted = F.pad(x[:, :, 1:, 1:], (0, 1, 0, 1))
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1))


def gabor_kernel(
    theta: torch.Tensor, sigma: torch.Tensor, lam: torch.Tensor, psi: torch.Tensor, gamma: torch.Tensor, size: int
) -> torch.Tensor:
    """Per-channel Gabor kernels (C, 1, size, size) on the grid [−1, 1]², from raw parameters of shape (C,).

    θ = 2π·sigmoid(θ'), σ = 0.1 + 0.4·sigmoid(σ'), λ = 0.001 + 0.999·sigmoid(λ'), γ = 1 + 0.5·γ';
    x' = x cos θ + y sin θ, y' = −x sin θ + y cos θ,
    g(x, y) = exp(−(x'² + γ² y'²) / (2σ²)) · cos(2π x' / λ + ψ).
    """
    t = 2 * math.pi * torch.sigmoid(theta)[:, None, None]
    s = (0.1 + 0.4 * torch.sigmoid(sigma))[:, None, None]
    w = (0.001 + 0.999 * torch.sigmoid(lam))[:, None, None]
    g = (1 + 0.5 * gamma)[:, None, None]
    axis = torch.linspace(-1.0, 1.0, size, dtype=theta.dtype, device=theta.device)
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    xr = x * torch.cos(t) + y * torch.sin(t)
    yr = -x * torch.sin(t) + y * torch.cos(t)
    kernel = torch.exp(-(xr**2 + g**2 * yr**2) / (2 * s**2)) * torch.cos(2 * math.pi * xr / w + psi[:, None, None])
    return kernel[:, None]


class GaborConv2d(nn.Module):
    """Depthwise conv with a learnable Gabor kernel per channel (recomputed from 5 parameters each forward).

    A bitfx IR module: kept whole by `capture`; `fold_gabor` bakes the kernel into a plain conv.
    """

    bitfx_leaf = True

    def __init__(self, channels: int, size: int = 3) -> None:
        super().__init__()
        self.size = size
        self.theta = nn.Parameter(torch.randn(channels))
        self.sigma = nn.Parameter(torch.randn(channels))
        self.lam = nn.Parameter(torch.randn(channels))
        self.psi = nn.Parameter(torch.randn(channels))
        self.gamma = nn.Parameter(torch.randn(channels))

    def kernel(self) -> torch.Tensor:
        return gabor_kernel(self.theta, self.sigma, self.lam, self.psi, self.gamma, self.size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.kernel(), padding=self.size // 2, groups=x.shape[1])


class DotProductFilter(nn.Module):
    """Non-local mean with dot-product affinity (no softmax): y_i = (1/N) Σ_j (x_i·x_j) x_j, then a 1×1 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = torch.flatten(x, 2)
        affinity = torch.bmm(flat.transpose(1, 2), flat) / flat.shape[2]
        return self.conv(torch.bmm(flat, affinity).view_as(x))


class DenoisingBlock(nn.Module):
    """y = x + BN(filter(x)), BN starting at γ = β = 0. With stride 2 the block down-samples
    bilinearly: before filtering (bitfx's search space, `align_corners=False`), or after it with
    `downsample_last=True` (the ABanditNAS test code's order, `align_corners=True`)."""

    def __init__(self, channels: int, stride: int, filter: nn.Module, downsample_last: bool = False) -> None:
        super().__init__()
        self.stride = stride
        self.downsample_last = downsample_last
        self.filter = filter
        self.bn = nn.BatchNorm2d(channels)
        nn.init.zeros_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != 1 and not self.downsample_last:
            x = F.interpolate(x, scale_factor=1 / self.stride, mode="bilinear", align_corners=False)
        y = x + self.bn(self.filter(x))
        if self.stride != 1 and self.downsample_last:
            y = F.interpolate(y, scale_factor=1 / self.stride, mode="bilinear", align_corners=True)
        return y


def _skip(c: int, stride: int) -> nn.Module:
    return nn.Identity() if stride == 1 else FactorizedReduce(c, c)


OPS: dict[str, Callable[[int, int], nn.Module]] = {
    "none": lambda c, s: Zero(s),
    "skip_connect": _skip,
    "max_pool_3x3": lambda c, s: nn.MaxPool2d(3, s, padding=1),
    "avg_pool_3x3": lambda c, s: nn.AvgPool2d(3, s, padding=1, count_include_pad=False),
    "sep_conv_3x3": lambda c, s: SepConv(c, 3, s, 1),
    "sep_conv_5x5": lambda c, s: SepConv(c, 5, s, 2),
    "dil_conv_3x3": lambda c, s: DilConv(c, 3, s, 2, 2),
    "dil_conv_5x5": lambda c, s: DilConv(c, 5, s, 4, 2),
    "conv_3x3": lambda c, s: ReLUConvBN(c, c, 3, s, 2, dilation=2),
    "conv_5x5": lambda c, s: ReLUConvBN(c, c, 5, s, 4, dilation=2),
    "gab_filt_3x3": lambda c, s: DenoisingBlock(c, s, GaborConv2d(c, 3)),
    "dtp_blok_3x3": lambda c, s: DenoisingBlock(c, s, DotProductFilter(c)),
}


def make_op(name: str, channels: int, stride: int) -> nn.Module:
    """The operation `name` on `channels` channels with `stride`."""
    if name not in OPS:
        raise ValueError(f"unknown cell operation {name!r}; known: {', '.join(sorted(OPS))}")
    return OPS[name](channels, stride)
