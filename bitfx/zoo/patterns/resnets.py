"""Compact residual networks: basic and bottleneck blocks, the ResNet-D average-pool shortcut,
pre-activation blocks, ResNeXt's grouped bottleneck and a wide ResNet (3x32x32 inputs)."""

from torch import Tensor, nn

from bitfx.zoo.patterns.common import Head, conv_bn, init_pattern_weights


def _shortcut(in_channels: int, out_channels: int, stride: int, avg_pool: bool) -> nn.Module:
    """Identity when the shape is kept; else a strided 1x1 conv + BN, or (ResNet-D) a 2x2
    average pool followed by an unstrided 1x1 conv + BN."""
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    if avg_pool and stride > 1:
        return nn.Sequential(
            nn.AvgPool2d(stride, stride, ceil_mode=True), conv_bn(in_channels, out_channels, 1, act=None)
        )
    return conv_bn(in_channels, out_channels, 1, stride, act=None)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers and a shortcut, ReLU after the add."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, avg_pool: bool = False) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_bn(in_channels, out_channels, 3, stride), conv_bn(out_channels, out_channels, 3, act=None)
        )
        self.shortcut = _shortcut(in_channels, out_channels, stride, avg_pool)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (grouped for ResNeXt, strided), 1x1 expand; ReLU after the add."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        width: int = 0,
        groups: int = 1,
        avg_pool: bool = False,
    ) -> None:
        super().__init__()
        width = width or out_channels // 4
        self.body = nn.Sequential(
            conv_bn(in_channels, width, 1),
            conv_bn(width, width, 3, stride, groups=groups),
            conv_bn(width, out_channels, 1, act=None),
        )
        self.shortcut = _shortcut(in_channels, out_channels, stride, avg_pool)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class PreActBlock(nn.Module):
    """Pre-activation block (He et al. 2016, "Identity Mappings"): BN-ReLU-conv twice; the
    projection shortcut, when there is one, takes the pre-activated input."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.projection = None
        if stride != 1 or in_channels != out_channels:
            self.projection = nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu1(self.bn1(x))
        shortcut = x if self.projection is None else self.projection(out)
        out = self.conv1(out)
        return self.conv2(self.relu2(self.bn2(out))) + shortcut


class CompactResNet(nn.Module):
    """Stem conv to the first width, one block per stage (stride 2 after the first), pooled head."""

    def __init__(self, block: type[nn.Module], widths: tuple[int, ...], preact: bool = False, **kwargs: int) -> None:
        super().__init__()
        self.example_input_shape = (1, 3, 32, 32)
        stem = widths[0] if block is not Bottleneck else widths[0] // 2
        self.stem = nn.Conv2d(3, stem, 3, 1, 1, bias=False) if preact else conv_bn(3, stem, 3)
        blocks, channels = [], stem
        for index, width in enumerate(widths):
            blocks.append(block(channels, width, 1 if index == 0 else 2, **kwargs))
            channels = width
        self.blocks = nn.Sequential(*blocks)
        self.final = nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU()) if preact else nn.Identity()
        self.head = Head(channels)
        init_pattern_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.final(self.blocks(self.stem(x))))


def resnet_basic() -> CompactResNet:
    """ResNet with basic blocks, widths 16/32/64, 1x1-conv projection shortcuts."""
    return CompactResNet(BasicBlock, (16, 32, 64))


def resnet_bottleneck() -> CompactResNet:
    """ResNet with bottleneck blocks (1x1-3x3-1x1), widths 32/64/128."""
    return CompactResNet(Bottleneck, (32, 64, 128))


def resnet_d() -> CompactResNet:
    """ResNet-D: bottleneck blocks whose downsampling shortcut is avg-pool + 1x1 conv."""
    return CompactResNet(Bottleneck, (32, 64, 128), avg_pool=True)


def preact_resnet() -> CompactResNet:
    """Pre-activation ResNet: BN-ReLU-conv blocks, a final BN-ReLU before the head."""
    return CompactResNet(PreActBlock, (16, 32, 64), preact=True)


def resnext() -> CompactResNet:
    """ResNeXt: bottleneck blocks with a grouped 3x3 conv (cardinality 8, width 32)."""
    return CompactResNet(Bottleneck, (64, 128), width=32, groups=8)


def wide_resnet() -> CompactResNet:
    """Wide ResNet: basic blocks at widths 32/64/128 (widening factor 2 over ``resnet_basic``)."""
    return CompactResNet(BasicBlock, (32, 64, 128))
