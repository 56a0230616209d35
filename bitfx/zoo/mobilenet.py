"""MobileNetV2 (Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks", CVPR 2018),
CIFAR variant."""

from torch import Tensor, nn

from bitfx.zoo.resnet_cifar import init_weights

# (expansion t, output channels c, repeats n, first stride s) per stage, Table 2 of the paper
# with the CIFAR change: the second stage keeps stride 1 (the first conv does too, see below).
_STAGES = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def _divisible_by_8(channels: float) -> int:
    """Round a width-scaled channel count to a multiple of 8, never dropping below 90% of it."""
    rounded = max(8, int(channels + 4) // 8 * 8)
    return rounded + 8 if rounded < 0.9 * channels else rounded


def _conv_bn_relu6(
    in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1
) -> list[nn.Module]:
    padding = kernel // 2
    return [
        nn.Conv2d(in_channels, out_channels, kernel, stride, padding, groups=groups, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU6(),
    ]


class InvertedResidual(nn.Module):
    """1x1 expansion, 3x3 depthwise conv, linear 1x1 projection; residual add when shape is kept."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        expand = _conv_bn_relu6(in_channels, hidden, 1) if expansion != 1 else []
        self.block = nn.Sequential(
            *expand,
            *_conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.use_residual = stride == 1 and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        # use_residual is fixed at construction, so fx resolves this branch while tracing.
        if self.use_residual:
            return x + self.block(x)
        return self.block(x)


class MobileNetV2(nn.Module):
    """3x3 conv to 32 channels (stride 1), the inverted-residual stages, 1x1 conv to 1280,
    global average pool, linear classifier. A 32x32 input reaches the 1x1 conv at 4x4."""

    def __init__(self, num_classes: int = 10, width_mult: float = 1.0) -> None:
        super().__init__()
        self.example_input_shape = (1, 3, 32, 32)
        in_channels = _divisible_by_8(32 * width_mult)
        last_channels = _divisible_by_8(1280 * max(1.0, width_mult))
        layers = _conv_bn_relu6(3, in_channels, 3)
        for expansion, channels, repeats, stride in _STAGES:
            out_channels = _divisible_by_8(channels * width_mult)
            for index in range(repeats):
                block_stride = stride if index == 0 else 1
                layers.append(InvertedResidual(in_channels, out_channels, block_stride, expansion))
                in_channels = out_channels
        layers += _conv_bn_relu6(in_channels, last_channels, 1)
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(last_channels, num_classes)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.flatten(self.pool(self.features(x))))


def mobilenet_v2(num_classes: int = 10, width_mult: float = 1.0) -> MobileNetV2:
    """MobileNetV2 for 3x32x32 inputs (Sandler et al. 2018), CIFAR strides."""
    return MobileNetV2(num_classes, width_mult)
