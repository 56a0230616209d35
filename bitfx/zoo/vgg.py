"""VGG-small, the CIFAR network of the binary/low-bit papers (Zhang et al., "LQ-Nets", ECCV 2018;
Lin et al., "Rotated Binary Neural Network", NeurIPS 2020)."""

from torch import Tensor, nn

from bitfx.zoo.resnet_cifar import init_weights


def _conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, 3, 1, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    ]


class VGGSmall(nn.Module):
    """Six 3x3 conv-BN-ReLU layers (128, 128, 256, 256, 512, 512), a 2x2 max pool after every
    second one, then a single linear classifier on the 512x4x4 features.

    The papers' code orders the pooled layers conv -> MaxPool -> BN -> ReLU. Here they are
    conv -> BN -> ReLU -> MaxPool, which keeps every conv directly followed by its BN so a
    BN-folding pass can fold it. Max pooling commutes with ReLU and with a per-channel
    affine map of positive scale, so the two orders compute the same function whenever
    BN's scale (gamma / sqrt(var + eps)) is positive, as it is at initialisation.
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.example_input_shape = (1, 3, 32, 32)
        self.features = nn.Sequential(
            *_conv_bn_relu(3, 128),
            *_conv_bn_relu(128, 128),
            nn.MaxPool2d(2),
            *_conv_bn_relu(128, 256),
            *_conv_bn_relu(256, 256),
            nn.MaxPool2d(2),
            *_conv_bn_relu(256, 512),
            *_conv_bn_relu(512, 512),
            nn.MaxPool2d(2),
        )
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(512 * 4 * 4, num_classes)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.flatten(self.features(x)))


def vgg_small(num_classes: int = 10) -> VGGSmall:
    """VGG-small for 3x32x32 inputs (LQ-Nets, Zhang et al. 2018; RBNN, Lin et al. 2020)."""
    return VGGSmall(num_classes)
