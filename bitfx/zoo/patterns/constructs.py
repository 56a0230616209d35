"""Compact models built around one construct that real code bases use: adaptive pooling before a
linear classifier (VGG/AlexNet), LayerNorm + GELU + depthwise 7x7 (ConvNeXt), a BatchNorm subclass
that holds its activation, weight-standardised convs with GroupNorm (BiT), two inputs, 1-D convs."""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bitfx.zoo.patterns.common import Head, init_pattern_weights


class VGGAdaptive(nn.Module):
    """VGG/AlexNet style: conv-BN-ReLU stacks and max pools, ``AdaptiveAvgPool2d((3, 3))`` over a
    4x4 map (overlapping windows), flatten, and a dropout/ReLU linear classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.example_input_shape = (1, 3, 32, 32)
        layers: list[nn.Module] = []
        channels = 3
        for width in (16, 32, 64):
            layers += [nn.Conv2d(channels, width, 3, 1, 1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2)]
            channels = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d((3, 3))
        self.classifier = nn.Sequential(
            nn.Dropout(0.5), nn.Linear(64 * 9, 128), nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, 10)
        )
        init_pattern_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def vgg_adaptive() -> VGGAdaptive:
    """VGG/AlexNet with adaptive average pooling and a two-layer linear classifier."""
    return VGGAdaptive()


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an (N, C, H, W) tensor, by permuting to channels-last."""

    def forward(self, x: Tensor) -> Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    """Depthwise 7x7 conv, channels-last LayerNorm, Linear 4x, GELU, Linear back, layer scale, residual."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(channels, channels, 7, padding=3, groups=channels)
        self.norm = nn.LayerNorm(channels, eps=1e-6)
        self.pwconv1 = nn.Linear(channels, 4 * channels)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * channels, channels)
        self.gamma = nn.Parameter(torch.full((channels,), 0.5))

    def forward(self, x: Tensor) -> Tensor:
        out = self.dwconv(x).permute(0, 2, 3, 1)
        out = self.pwconv2(self.act(self.pwconv1(self.norm(out))))
        return x + (self.gamma * out).permute(0, 3, 1, 2)


class ConvNeXt(nn.Module):
    """Patchify stem (4x4 stride 4 + LayerNorm), blocks, LayerNorm + 2x2 stride-2 downsampling, head."""

    def __init__(self) -> None:
        super().__init__()
        self.example_input_shape = (1, 3, 32, 32)
        self.stem = nn.Sequential(nn.Conv2d(3, 24, 4, 4), LayerNorm2d(24, eps=1e-6))
        self.stage1 = nn.Sequential(ConvNeXtBlock(24), ConvNeXtBlock(24))
        self.down = nn.Sequential(LayerNorm2d(24, eps=1e-6), nn.Conv2d(24, 48, 2, 2))
        self.stage2 = nn.Sequential(ConvNeXtBlock(48), ConvNeXtBlock(48))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.norm = nn.LayerNorm(48, eps=1e-6)
        self.fc = nn.Linear(48, 10)
        init_pattern_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stage2(self.down(self.stage1(self.stem(x))))
        return self.fc(self.norm(torch.flatten(self.pool(x), 1)))


def convnext() -> ConvNeXt:
    """ConvNeXt: depthwise 7x7, LayerNorm (channels-last and channels-first), GELU, layer scale."""
    return ConvNeXt()


class BatchNormAct2d(nn.BatchNorm2d):
    """A BatchNorm2d that also applies its activation, as several model libraries define one.
    Being defined outside ``torch.nn`` it is traced through: the graph holds ``F.batch_norm``
    with the running statistics as ``get_attr`` nodes, then the activation."""

    def __init__(self, num_features: int, act: bool = True) -> None:
        super().__init__(num_features)
        self.act = nn.ReLU() if act else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = F.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, self.training, self.momentum, self.eps
        )
        return self.act(x)


class BNActBlock(nn.Module):
    """Basic residual block whose norms are ``BatchNormAct2d``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = BatchNormAct2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = BatchNormAct2d(out_channels, act=False)
        self.shortcut = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), BatchNormAct2d(out_channels, act=False)
        )

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))) + self.shortcut(x))


class BNActNet(nn.Module):
    """Stem conv + ``BatchNormAct2d``, two residual blocks, head."""

    def __init__(self) -> None:
        super().__init__()
        self.example_input_shape = (1, 3, 32, 32)
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), BatchNormAct2d(16))
        self.blocks = nn.Sequential(BNActBlock(16, 32, 2), BNActBlock(32, 64, 2))
        self.head = Head(64)
        init_pattern_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.blocks(self.stem(x)))


def bn_act_net() -> BNActNet:
    """A ResNet whose BatchNorms are a subclass holding the activation (traced to ``F.batch_norm``)."""
    return BNActNet()


class StdConv2d(nn.Conv2d):
    """Weight-standardised conv: each filter is normalised to zero mean and unit variance (through
    ``F.batch_norm`` in training mode over the filter) before the convolution."""

    def forward(self, x: Tensor) -> Tensor:
        weight = F.batch_norm(
            self.weight.reshape(1, self.out_channels, -1), None, None, training=True, momentum=0.0, eps=1e-6
        ).reshape_as(self.weight)
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class WSBlock(nn.Module):
    """BiT-style pre-activation block: GroupNorm-ReLU-StdConv twice, projection shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(4, in_channels)
        self.conv1 = StdConv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.norm2 = nn.GroupNorm(4, out_channels)
        self.conv2 = StdConv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.projection = StdConv2d(in_channels, out_channels, 1, stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.norm1(x))
        shortcut = self.projection(out)
        return self.conv2(F.relu(self.norm2(self.conv1(out)))) + shortcut


class WSNet(nn.Module):
    """Stem StdConv, two weight-standardised blocks, GroupNorm-ReLU, head."""

    def __init__(self) -> None:
        super().__init__()
        self.example_input_shape = (1, 3, 32, 32)
        self.stem = StdConv2d(3, 16, 3, 1, 1, bias=False)
        self.blocks = nn.Sequential(WSBlock(16, 32, 2), WSBlock(32, 64, 2))
        self.final = nn.Sequential(nn.GroupNorm(4, 64), nn.ReLU())
        self.head = Head(64)
        init_pattern_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.final(self.blocks(self.stem(x))))


def ws_conv_net() -> WSNet:
    """BiT-style ResNet of weight-standardised convs and GroupNorm (no BatchNorm)."""
    return WSNet()


class TwoInputNet(nn.Module):
    """An RGB image and a one-channel map (e.g. depth), each through its own conv-BN-ReLU stem,
    concatenated, then a shared conv-BN-ReLU and a head. ``example_input_shapes`` lists both
    inputs; ``example_input_shape`` is the first."""

    def __init__(self) -> None:
        super().__init__()
        self.example_input_shapes = ((1, 3, 32, 32), (1, 1, 32, 32))
        self.example_input_shape = self.example_input_shapes[0]
        self.rgb = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.depth = nn.Sequential(nn.Conv2d(1, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.fuse = nn.Sequential(nn.Conv2d(24, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        self.mix = nn.Sequential(nn.Conv2d(32, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        self.head = Head(32)
        init_pattern_weights(self)

    def forward(self, rgb: Tensor, depth: Tensor) -> Tensor:
        return self.head(self.mix(self.fuse(torch.cat([self.rgb(rgb), self.depth(depth)], 1))))


def two_input_net() -> TwoInputNet:
    """A model with two inputs (RGB 3x32x32 and depth 1x32x32) fused by concatenation."""
    return TwoInputNet()


class Conv1dNet(nn.Module):
    """1-D signal classifier: Conv1d-BN1d-ReLU layers with max pools, global average pool, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.example_input_shape = (1, 4, 64)
        layers: list[nn.Module] = []
        channels = 4
        for width in (16, 32, 64):
            layers += [
                nn.Conv1d(channels, width, 5, 1, 2, bias=False),
                nn.BatchNorm1d(width),
                nn.ReLU(),
                nn.MaxPool1d(2),
            ]
            channels = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.fc = nn.Linear(64, 10)
        init_pattern_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def conv1d_net() -> Conv1dNet:
    """A 1-D conv model on 4-channel signals of length 64."""
    return Conv1dNet()
