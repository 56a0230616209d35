"""ImageNet ResNet-18 (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016, Table 1)."""

from torch import Tensor, nn

from bitfx.zoo.resnet_cifar import BasicBlock, init_weights


class ResNet18(nn.Module):
    """7x7/2 conv, 3x3/2 max pool, four stages of two BasicBlocks (64/128/256/512), average pool, fc."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.example_input_shape = (1, 3, 224, 224)
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        layers = []
        in_channels = 64
        for stage, channels in enumerate((64, 128, 256, 512)):
            stride = 1 if stage == 0 else 2
            layers.append(BasicBlock(in_channels, channels, stride))
            layers.append(BasicBlock(channels, channels))
            in_channels = channels
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(512, num_classes)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layers(x)
        return self.fc(self.flatten(self.pool(x)))


def resnet18(num_classes: int = 1000) -> ResNet18:
    """ResNet-18 for 3x224x224 inputs (He et al. 2016)."""
    return ResNet18(num_classes)
