"""Building blocks shared by the compact pattern models: conv-BN-activation, a pooled linear
head, and the initialisation that makes an untrained model pass signal in eval mode."""

import torch
from torch import Tensor, nn


def conv_bn(
    in_channels: int,
    out_channels: int,
    kernel: int = 3,
    stride: int = 1,
    groups: int = 1,
    act: type[nn.Module] | None = nn.ReLU,
) -> nn.Sequential:
    """Conv (no bias, "same" padding) → BatchNorm → activation (none when ``act`` is None)."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_channels),
    ]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class Head(nn.Module):
    """Global average pool, flatten, linear classifier."""

    def __init__(self, in_channels: int, num_classes: int = 10) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.flatten(self.pool(x)))


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation: a per-channel gate computed from the pooled input,
    ``x * gate(fc2(act(fc1(pool(x)))))``, with 1x1 convs as the two layers."""

    def __init__(
        self, channels: int, reduced: int, act: type[nn.Module] = nn.ReLU, gate: type[nn.Module] = nn.Sigmoid
    ) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, reduced, 1)
        self.act = act()
        self.fc2 = nn.Conv2d(reduced, channels, 1)
        self.gate = gate()

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gate(self.fc2(self.act(self.fc1(self.pool(x)))))


def init_pattern_weights(model: nn.Module, seed: int = 0) -> nn.Module:
    """Kaiming-normal (fan-in) conv and linear weights, zero biases, and slightly random
    BatchNorm/LayerNorm affine parameters and running statistics, so that an untrained model
    passes signal in eval mode and folding a BatchNorm is not the identity. Seeded."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.modules.batchnorm._BatchNorm):
                shape = module.num_features
                module.running_mean.copy_(torch.randn(shape, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(shape, generator=generator) * 0.5 + 0.75)
                module.weight.copy_(torch.rand(shape, generator=generator) * 0.5 + 0.75)
                module.bias.copy_(torch.randn(shape, generator=generator) * 0.1)
            elif isinstance(module, nn.LayerNorm) and module.elementwise_affine:
                module.weight.copy_(torch.rand(module.weight.shape, generator=generator) * 0.5 + 0.75)
                module.bias.copy_(torch.randn(module.weight.shape, generator=generator) * 0.1)
    return model
