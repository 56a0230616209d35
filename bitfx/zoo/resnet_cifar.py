"""CIFAR-style ResNets (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016, Sec. 4.2)."""

from torch import Tensor, nn


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus a shortcut, ReLU after the add.

    The shortcut is the identity when shape is kept, otherwise a 1x1 conv + BN
    ("option B"). Shared with the ImageNet ResNet-18.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu2 = nn.ReLU()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        else:
            # An empty Sequential is the identity and leaves no node in an fx graph.
            self.shortcut = nn.Sequential()

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


def init_weights(model: nn.Module) -> None:
    """Kaiming-normal conv weights in fan-in mode, which keeps the forward signal's scale at
    initialisation (in fan-out mode MobileNetV2's depthwise convs shrink it to ~1e-8 in eval
    mode, so a check of the outputs would only see the classifier bias); BN keeps weight 1,
    bias 0."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)


class CifarResNet(nn.Module):
    """3x3 conv to 16 channels, three stages of 16/32/64 channels, global average pool, fc."""

    def __init__(self, blocks_per_stage: int, num_classes: int = 10) -> None:
        super().__init__()
        self.example_input_shape = (1, 3, 32, 32)
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        layers = []
        in_channels = 16
        for stage, channels in enumerate((16, 32, 64)):
            for index in range(blocks_per_stage):
                stride = 2 if stage > 0 and index == 0 else 1
                layers.append(BasicBlock(in_channels, channels, stride))
                in_channels = channels
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(64, num_classes)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layers(x)
        return self.fc(self.flatten(self.pool(x)))


def resnet20(num_classes: int = 10) -> CifarResNet:
    """ResNet-20 for 3x32x32 inputs (He et al. 2016): 3 blocks per stage, 20 weight layers."""
    return CifarResNet(3, num_classes)


def resnet56(num_classes: int = 10) -> CifarResNet:
    """ResNet-56 for 3x32x32 inputs (He et al. 2016): 9 blocks per stage, 56 weight layers."""
    return CifarResNet(9, num_classes)
