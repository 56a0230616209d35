"""Compact multi-branch networks: SqueezeNet, DenseNet, GoogLeNet/Inception, RepVGG, DLA, DPN and
HRNet. Their blocks join branches by concatenation, sums of several convs, aggregation trees,
dual residual/dense paths and multi-resolution fusion with upsampling. Inputs are 3x32x32."""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bitfx.zoo.densenet import DenseLayer
from bitfx.zoo.patterns.common import Head, conv_bn, init_pattern_weights


class _Net(nn.Module):
    """A stem, a body and a head run in sequence, with weights initialised for the patterns."""

    def __init__(self, stem: nn.Module, body: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.example_input_shape = (1, 3, 32, 32)
        self.stem, self.body, self.head = stem, body, head
        init_pattern_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(self.stem(x)))


class Fire(nn.Module):
    """SqueezeNet fire module: 1x1 squeeze, then 1x1 and 3x3 expands concatenated."""

    def __init__(self, in_channels: int, squeeze: int, expand: int) -> None:
        super().__init__()
        self.squeeze = nn.Sequential(nn.Conv2d(in_channels, squeeze, 1), nn.ReLU())
        self.expand1 = nn.Sequential(nn.Conv2d(squeeze, expand, 1), nn.ReLU())
        self.expand3 = nn.Sequential(nn.Conv2d(squeeze, expand, 3, padding=1), nn.ReLU())

    def forward(self, x: Tensor) -> Tensor:
        x = self.squeeze(x)
        return torch.cat([self.expand1(x), self.expand3(x)], 1)


def squeezenet() -> _Net:
    """SqueezeNet: fire modules, max pools, no BatchNorm, a 1x1-conv classifier then global pool."""
    body = nn.Sequential(Fire(32, 8, 16), Fire(32, 8, 16), nn.MaxPool2d(2), Fire(32, 16, 32), Fire(64, 16, 32))
    head = nn.Sequential(nn.Dropout(0.5), nn.Conv2d(64, 10, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    stem = nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1), nn.ReLU())
    return _Net(stem, body, head)


def densenet_bc() -> _Net:
    """DenseNet-BC: two dense blocks of three layers (growth 8) with a BN-ReLU-1x1-avgpool transition."""
    blocks: list[nn.Module] = [DenseLayer(16 + 8 * i, 8) for i in range(3)]
    blocks += [nn.BatchNorm2d(40), nn.ReLU(), nn.Conv2d(40, 20, 1, bias=False), nn.AvgPool2d(2)]
    blocks += [DenseLayer(20 + 8 * i, 8) for i in range(3)]
    head = nn.Sequential(nn.BatchNorm2d(44), nn.ReLU(), Head(44))
    return _Net(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.Sequential(*blocks), head)


class Inception(nn.Module):
    """GoogLeNet inception block: 1x1; 1x1→3x3; 1x1→3x3→3x3; 3x3 max pool→1x1; concatenated."""

    def __init__(self, in_channels: int, b1: int, b3: int, b5: int, pool: int) -> None:
        super().__init__()
        self.branch1 = conv_bn(in_channels, b1, 1)
        self.branch3 = nn.Sequential(conv_bn(in_channels, b3 // 2, 1), conv_bn(b3 // 2, b3, 3))
        self.branch5 = nn.Sequential(conv_bn(in_channels, b5 // 2, 1), conv_bn(b5 // 2, b5, 3), conv_bn(b5, b5, 3))
        self.branch_pool = nn.Sequential(nn.MaxPool2d(3, 1, 1), conv_bn(in_channels, pool, 1))

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch1(x), self.branch3(x), self.branch5(x), self.branch_pool(x)], 1)


def inception() -> _Net:
    """GoogLeNet/Inception: two inception blocks with a max pool between them."""
    body = nn.Sequential(Inception(24, 8, 16, 8, 8), nn.MaxPool2d(2), Inception(40, 16, 24, 8, 8))
    return _Net(conv_bn(3, 24, 3), body, Head(56))


class RepVGGBlock(nn.Module):
    """RepVGG block in its training form: 3x3 conv-BN + 1x1 conv-BN (+ BN of the input when the
    shape is kept), summed, then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.dense = conv_bn(in_channels, out_channels, 3, stride, act=None)
        self.one = conv_bn(in_channels, out_channels, 1, stride, act=None)
        self.identity = nn.BatchNorm2d(in_channels) if stride == 1 and in_channels == out_channels else None
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out = self.dense(x) + self.one(x)
        if self.identity is not None:
            out = out + self.identity(x)
        return self.relu(out)


def repvgg() -> _Net:
    """RepVGG: multi-branch blocks (3x3, 1x1, identity BN), widths 16-64."""
    body = nn.Sequential(RepVGGBlock(16, 32, 2), RepVGGBlock(32, 32, 1), RepVGGBlock(32, 64, 2), RepVGGBlock(64, 64, 1))
    return _Net(RepVGGBlock(3, 16, 1), body, Head(64))


class _Basic(nn.Module):
    """Residual basic block used inside the DLA tree."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_bn(in_channels, out_channels, 3, stride), conv_bn(out_channels, out_channels, 3, act=None)
        )
        self.shortcut = (
            nn.Identity()
            if stride == 1 and in_channels == out_channels
            else conv_bn(in_channels, out_channels, 1, stride, act=None)
        )

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


class Root(nn.Module):
    """DLA aggregation node: 1x1 conv-BN over the concatenated children, plus the first child, ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = conv_bn(in_channels, out_channels, 1, act=None)

    def forward(self, *children: Tensor) -> Tensor:
        return F.relu(self.conv(torch.cat(children, 1)) + children[0])


class Tree(nn.Module):
    """DLA tree of depth ``levels``: two subtrees (blocks at the leaves) joined by a root that also
    receives the (max-pooled, projected) input of the tree."""

    def __init__(self, levels: int, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        if levels == 1:
            self.left: nn.Module = _Basic(in_channels, out_channels, stride)
            self.right: nn.Module = _Basic(out_channels, out_channels, 1)
        else:
            self.left = Tree(levels - 1, in_channels, out_channels, stride)
            self.right = Tree(levels - 1, out_channels, out_channels, 1)
        self.root = Root(3 * out_channels, out_channels)
        self.down = nn.MaxPool2d(stride) if stride > 1 else nn.Identity()
        self.project = conv_bn(in_channels, out_channels, 1, act=None) if in_channels != out_channels else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        bottom = self.project(self.down(x))
        left = self.left(x)
        right = self.right(left)
        return self.root(right, left, bottom)


def dla() -> _Net:
    """DLA: hierarchical aggregation trees (depth 1 and 2) with concatenating root nodes."""
    return _Net(conv_bn(3, 16, 3), nn.Sequential(Tree(1, 16, 32, 2), Tree(2, 32, 48, 2)), Head(48))


class DualPathBlock(nn.Module):
    """DPN block: 1x1 → grouped 3x3 → 1x1 over the concatenated (residual, dense) input; the
    first ``residual`` output channels are added to the residual path, the rest appended to the
    dense path. The input is projected to ``residual + dense`` channels when it has another shape."""

    def __init__(self, in_channels: int, residual: int, dense: int, growth: int, width: int, stride: int) -> None:
        super().__init__()
        self.residual = residual
        project = stride > 1 or in_channels != residual + dense
        self.project = conv_bn(in_channels, residual + dense, 1, stride, act=None) if project else None
        self.body = nn.Sequential(
            conv_bn(in_channels, width, 1),
            conv_bn(width, width, 3, stride, groups=4),
            conv_bn(width, residual + growth, 1, act=None),
        )

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.project is None else self.project(x)
        out = self.body(x)
        res = shortcut[:, : self.residual] + out[:, : self.residual]
        dense = torch.cat([shortcut[:, self.residual :], out[:, self.residual :]], 1)
        return F.relu(torch.cat([res, dense], 1))


def dpn() -> _Net:
    """DPN: dual-path blocks (residual 32 channels, dense path growing by 8 per block; a
    strided block projects its input to the two paths)."""
    body = nn.Sequential(
        DualPathBlock(32, 32, 8, 8, 32, 2),
        DualPathBlock(48, 32, 16, 8, 32, 1),
        DualPathBlock(56, 32, 16, 8, 32, 2),
        DualPathBlock(56, 32, 24, 8, 32, 1),
    )
    return _Net(conv_bn(3, 32, 3), body, Head(64))


class HRFusion(nn.Module):
    """HRNet stage on two resolutions: a basic block per branch, then each output is the sum of
    both branches brought to its resolution (1x1 conv + ``F.interpolate`` up, strided 3x3 down)."""

    def __init__(self, high: int, low: int) -> None:
        super().__init__()
        self.high_block = _Basic(high, high, 1)
        self.low_block = _Basic(low, low, 1)
        self.low_to_high = conv_bn(low, high, 1, act=None)
        self.high_to_low = conv_bn(high, low, 3, 2, act=None)

    def forward(self, high: Tensor, low: Tensor) -> tuple[Tensor, Tensor]:
        high, low = self.high_block(high), self.low_block(low)
        up = F.interpolate(self.low_to_high(low), scale_factor=2.0, mode="nearest")
        return F.relu(high + up), F.relu(low + self.high_to_low(high))


class HRNet(nn.Module):
    """Stem, a split into 32x32 and 16x16 branches, two fusion stages, then the low branch
    upsampled (bilinear) and concatenated with the high one before the head."""

    def __init__(self) -> None:
        super().__init__()
        self.example_input_shape = (1, 3, 32, 32)
        self.stem = conv_bn(3, 16, 3)
        self.split = conv_bn(16, 32, 3, 2)
        self.stage1 = HRFusion(16, 32)
        self.stage2 = HRFusion(16, 32)
        self.final = conv_bn(48, 64, 1)
        self.head = Head(64)
        init_pattern_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        high = self.stem(x)
        low = self.split(high)
        high, low = self.stage1(high, low)
        high, low = self.stage2(high, low)
        up = F.interpolate(low, size=high.shape[-2:], mode="bilinear", align_corners=False)
        return self.head(self.final(torch.cat([high, up], 1)))


def hrnet() -> HRNet:
    """HRNet: two resolutions fused repeatedly, with upsampling through ``F.interpolate``."""
    return HRNet()
