"""A small DenseNet-BC (Huang et al., "Densely Connected Convolutional Networks", CVPR 2017)."""

import torch
from torch import Tensor, nn

from bitfx.zoo.resnet_cifar import init_weights


class DenseLayer(nn.Module):
    """BN-ReLU-1x1 conv (4k) - BN-ReLU-3x3 conv (k); the k new channels are concatenated to the input."""

    def __init__(self, in_channels: int, growth: int) -> None:
        super().__init__()
        self.branch = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.ReLU(),
            nn.Conv2d(in_channels, 4 * growth, 1, bias=False),
            nn.BatchNorm2d(4 * growth),
            nn.ReLU(),
            nn.Conv2d(4 * growth, growth, 3, 1, 1, bias=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([x, self.branch(x)], dim=1)


def _transition(in_channels: int, out_channels: int) -> nn.Sequential:
    """BN-ReLU-1x1 conv (compression) - 2x2 average pool between dense blocks."""
    return nn.Sequential(
        nn.BatchNorm2d(in_channels),
        nn.ReLU(),
        nn.Conv2d(in_channels, out_channels, 1, bias=False),
        nn.AvgPool2d(2),
    )


class DenseNetTiny(nn.Module):
    """3x3 conv to 2k channels, three dense blocks of four bottleneck layers with compression-0.5
    transitions between them, then BN-ReLU, global average pool and a linear classifier.

    Layers are pre-activation, so BN follows a concatenation rather than a conv except
    inside each bottleneck (1x1 conv -> BN)."""

    def __init__(self, num_classes: int = 10, growth: int = 12, layers_per_block: int = 4) -> None:
        super().__init__()
        self.example_input_shape = (1, 3, 32, 32)
        channels = 2 * growth
        layers: list[nn.Module] = [nn.Conv2d(3, channels, 3, 1, 1, bias=False)]
        for block in range(3):
            for _ in range(layers_per_block):
                layers.append(DenseLayer(channels, growth))
                channels += growth
            if block < 2:
                layers.append(_transition(channels, channels // 2))
                channels //= 2
        layers += [nn.BatchNorm2d(channels), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(channels, num_classes)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x))


def densenet_tiny(num_classes: int = 10) -> DenseNetTiny:
    """DenseNet-BC with growth rate 12 and 3 blocks of 4 layers, for 3x32x32 inputs (Huang et al. 2017)."""
    return DenseNetTiny(num_classes)
