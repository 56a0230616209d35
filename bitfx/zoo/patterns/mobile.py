"""Compact mobile networks: MobileNet V2/V3, EfficientNet, ShuffleNet V2, GhostNet, RegNet.

Their blocks hold the patterns of efficient CNNs: depthwise and grouped convs, squeeze-and-
excitation gates, hard-swish / hard-sigmoid / SiLU activations, stochastic depth, channel split
and shuffle, and channel slicing of a concatenation. Inputs are 3x32x32.
"""

import torch
from torch import Tensor, nn

from bitfx.zoo.mobilenet import InvertedResidual
from bitfx.zoo.patterns.common import Head, SqueezeExcite, conv_bn, init_pattern_weights


class StochasticDepth(nn.Module):
    """Drop the whole residual branch per sample with probability ``p`` while training; the
    identity in eval mode (capture the model in eval mode, or the random drop is traced)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.empty([x.shape[0]] + [1] * (x.ndim - 1), dtype=x.dtype, device=x.device).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class MobileBlock(nn.Module):
    """Inverted residual of MobileNet V3 / EfficientNet: 1x1 expand, kxk depthwise, optional SE,
    linear 1x1 projection, residual add (through stochastic depth) when the shape is kept."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int,
        stride: int,
        expand: int,
        act: type[nn.Module],
        se: bool,
        se_act: type[nn.Module] = nn.ReLU,
        se_gate: type[nn.Module] = nn.Hardsigmoid,
        drop: float = 0.0,
    ) -> None:
        super().__init__()
        hidden = in_channels * expand
        layers = [conv_bn(in_channels, hidden, 1, act=act)] if expand != 1 else []
        layers.append(conv_bn(hidden, hidden, kernel, stride, groups=hidden, act=act))
        if se:
            layers.append(SqueezeExcite(hidden, max(8, hidden // 4), se_act, se_gate))
        layers.append(conv_bn(hidden, out_channels, 1, act=None))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and in_channels == out_channels
        self.drop = StochasticDepth(drop)

    def forward(self, x: Tensor) -> Tensor:
        if self.residual:
            return x + self.drop(self.block(x))
        return self.block(x)


class _Stack(nn.Module):
    """Stem, a sequence of blocks, an optional last 1x1 conv, pooled head."""

    def __init__(self, stem: nn.Module, blocks: list[nn.Module], last: nn.Module, channels: int) -> None:
        super().__init__()
        self.example_input_shape = (1, 3, 32, 32)
        self.stem = stem
        self.blocks = nn.Sequential(*blocks)
        self.last = last
        self.head = Head(channels)
        init_pattern_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.last(self.blocks(self.stem(x))))


def mobilenet_v2_compact() -> _Stack:
    """MobileNet V2: inverted residuals with ReLU6, linear bottlenecks, widths 16-48."""
    blocks = [
        InvertedResidual(16, 16, 1, 1),
        InvertedResidual(16, 24, 2, 4),
        InvertedResidual(24, 24, 1, 4),
        InvertedResidual(24, 48, 2, 4),
    ]
    return _Stack(conv_bn(3, 16, 3, act=nn.ReLU6), blocks, conv_bn(48, 96, 1, act=nn.ReLU6), 96)


def mobilenet_v3() -> _Stack:
    """MobileNet V3: hard-swish, SE gates with hard-sigmoid, 3x3 and 5x5 depthwise convs."""
    blocks = [
        MobileBlock(16, 16, 3, 1, 1, nn.ReLU, se=True),
        MobileBlock(16, 24, 3, 2, 4, nn.ReLU, se=False),
        MobileBlock(24, 24, 5, 1, 3, nn.Hardswish, se=True),
        MobileBlock(24, 40, 5, 2, 3, nn.Hardswish, se=True),
    ]
    return _Stack(conv_bn(3, 16, 3, act=nn.Hardswish), blocks, conv_bn(40, 96, 1, act=nn.Hardswish), 96)


def efficientnet() -> _Stack:
    """EfficientNet: MBConv blocks with SiLU, SE (SiLU, sigmoid) and stochastic depth."""

    def block(cin: int, cout: int, kernel: int, stride: int, expand: int, drop: float) -> MobileBlock:
        return MobileBlock(cin, cout, kernel, stride, expand, nn.SiLU, True, nn.SiLU, nn.Sigmoid, drop)

    blocks = [
        block(16, 16, 3, 1, 1, 0.0),
        block(16, 24, 3, 2, 4, 0.05),
        block(24, 24, 3, 1, 4, 0.1),
        block(24, 40, 5, 2, 4, 0.15),
        block(40, 40, 5, 1, 4, 0.2),
    ]
    return _Stack(conv_bn(3, 16, 3, act=nn.SiLU), blocks, conv_bn(40, 128, 1, act=nn.SiLU), 128)


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """Interleave the channels of ``groups`` groups: view as (N, g, C/g, H, W), swap, flatten."""
    batch, channels, height, width = x.shape
    return x.view(batch, groups, channels // groups, height, width).transpose(1, 2).flatten(1, 2)


class ShuffleUnit(nn.Module):
    """ShuffleNet V2 unit: stride 1 splits the channels in two and transforms one half; stride 2
    transforms the input in two branches. The halves are concatenated and shuffled."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        half = out_channels // 2
        branch_in = in_channels if stride > 1 else in_channels // 2
        if stride > 1:
            self.branch1 = nn.Sequential(
                conv_bn(in_channels, in_channels, 3, stride, groups=in_channels, act=None),
                conv_bn(in_channels, half, 1),
            )
        self.branch2 = nn.Sequential(
            conv_bn(branch_in, half, 1),
            conv_bn(half, half, 3, stride, groups=half, act=None),
            conv_bn(half, half, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


def shufflenet_v2() -> _Stack:
    """ShuffleNet V2: channel split, two branches, concatenation and channel shuffle."""
    blocks = [ShuffleUnit(16, 32, 2), ShuffleUnit(32, 32, 1), ShuffleUnit(32, 64, 2), ShuffleUnit(64, 64, 1)]
    return _Stack(conv_bn(3, 16, 3), blocks, conv_bn(64, 128, 1), 128)


class GhostModule(nn.Module):
    """Ghost module: a 1x1 conv makes half the channels, a cheap depthwise conv the other half;
    the concatenation is sliced to ``out_channels``."""

    def __init__(self, in_channels: int, out_channels: int, relu: bool) -> None:
        super().__init__()
        self.out_channels = out_channels
        primary = (out_channels + 1) // 2
        act = nn.ReLU if relu else None
        self.primary = conv_bn(in_channels, primary, 1, act=act)
        self.cheap = conv_bn(primary, primary, 3, groups=primary, act=act)

    def forward(self, x: Tensor) -> Tensor:
        x1 = self.primary(x)
        return torch.cat([x1, self.cheap(x1)], dim=1)[:, : self.out_channels]


class GhostBottleneck(nn.Module):
    """Ghost module (expand, ReLU), strided depthwise conv when downsampling, optional SE,
    ghost module (project), shortcut (identity or depthwise + 1x1 conv)."""

    def __init__(self, in_channels: int, hidden: int, out_channels: int, stride: int, se: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = [GhostModule(in_channels, hidden, relu=True)]
        if stride > 1:
            layers.append(conv_bn(hidden, hidden, 3, stride, groups=hidden, act=None))
        if se:
            layers.append(SqueezeExcite(hidden, max(8, hidden // 4), nn.ReLU, nn.Hardsigmoid))
        layers.append(GhostModule(hidden, out_channels, relu=False))
        self.body = nn.Sequential(*layers)
        if stride == 1 and in_channels == out_channels:
            self.shortcut: nn.Module = nn.Identity()
        else:
            self.shortcut = nn.Sequential(
                conv_bn(in_channels, in_channels, 3, stride, groups=in_channels, act=None),
                conv_bn(in_channels, out_channels, 1, act=None),
            )

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x) + self.shortcut(x)


def ghostnet() -> _Stack:
    """GhostNet: ghost bottlenecks (odd channel counts sliced from a concatenation), SE."""
    blocks = [
        GhostBottleneck(16, 24, 16, 1, False),
        GhostBottleneck(16, 48, 24, 2, False),
        GhostBottleneck(24, 72, 24, 1, True),
        GhostBottleneck(24, 72, 40, 2, True),
    ]
    return _Stack(conv_bn(3, 16, 3), blocks, conv_bn(40, 96, 1), 96)


class RegNetBlock(nn.Module):
    """RegNetY block: 1x1, grouped 3x3 (group width 8), SE, 1x1, shortcut, ReLU after the add."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_bn(in_channels, out_channels, 1),
            conv_bn(out_channels, out_channels, 3, stride, groups=out_channels // 8),
            SqueezeExcite(out_channels, in_channels // 4),
            conv_bn(out_channels, out_channels, 1, act=None),
        )
        self.shortcut = (
            nn.Identity()
            if stride == 1 and in_channels == out_channels
            else conv_bn(in_channels, out_channels, 1, stride, act=None)
        )
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


def regnet() -> _Stack:
    """RegNetY: grouped convs of group width 8 with SE gates, widths 24/48/96."""
    blocks = [RegNetBlock(16, 24, 1), RegNetBlock(24, 48, 2), RegNetBlock(48, 48, 1), RegNetBlock(48, 96, 2)]
    return _Stack(conv_bn(3, 16, 3), blocks, nn.Identity(), 96)
