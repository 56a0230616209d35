"""A small EDSR super-resolution network (Lim et al., "Enhanced Deep Residual Networks for Single
Image Super-Resolution", CVPRW 2017)."""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bitfx.zoo.resnet_cifar import init_weights

RGB_MEAN = (0.4488, 0.4371, 0.4040)  # DIV2K mean, as used by EDSR


class MeanShift(nn.Module):
    """Fixed 1x1 conv that subtracts (sign=-1) or adds back (sign=+1) the RGB mean.

    Weight and bias are buffers, not parameters: nothing trains or compresses them.
    """

    def __init__(self, sign: int) -> None:
        super().__init__()
        self.register_buffer("weight", torch.eye(3).view(3, 3, 1, 1))
        self.register_buffer("bias", sign * torch.tensor(RGB_MEAN))

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight, self.bias)


def _conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, 1, 1)


class ResBlock(nn.Module):
    """conv-ReLU-conv, scaled by res_scale and added to the input (no BatchNorm)."""

    def __init__(self, n_feats: int, res_scale: float) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv3x3(n_feats, n_feats), nn.ReLU(), _conv3x3(n_feats, n_feats))
        self.res_scale = res_scale

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x) * self.res_scale


def _upsampler(scale: int, n_feats: int) -> nn.Sequential:
    """Sub-pixel upsampling: conv to n_feats*r^2 channels then PixelShuffle(r); x4 is two x2 stages."""
    if scale not in (2, 3, 4):
        raise ValueError(f"edsr_lite scale must be 2, 3 or 4, got {scale}")
    stages = [2, 2] if scale == 4 else [scale]
    layers: list[nn.Module] = []
    for r in stages:
        layers += [_conv3x3(n_feats, n_feats * r * r), nn.PixelShuffle(r)]
    return nn.Sequential(*layers)


class EDSR(nn.Module):
    """Mean shift, head conv, residual body with a global skip, sub-pixel tail, mean added back.
    Takes RGB images in [0, 1]."""

    def __init__(self, scale: int = 2, n_feats: int = 32, n_resblocks: int = 4, res_scale: float = 0.1) -> None:
        super().__init__()
        self.example_input_shape = (1, 3, 48, 48)
        self.sub_mean = MeanShift(-1)
        self.head = _conv3x3(3, n_feats)
        self.body = nn.Sequential(
            *(ResBlock(n_feats, res_scale) for _ in range(n_resblocks)),
            _conv3x3(n_feats, n_feats),
        )
        self.tail = nn.Sequential(_upsampler(scale, n_feats), _conv3x3(n_feats, 3))
        self.add_mean = MeanShift(+1)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.head(self.sub_mean(x))
        x = x + self.body(x)
        return self.add_mean(self.tail(x))


def edsr_lite(scale: int = 2, n_feats: int = 32, n_resblocks: int = 4, res_scale: float = 0.1) -> EDSR:
    """EDSR without BatchNorm (Lim et al. 2017), shrunk for quick tests: 3x48x48 in, 3x(48*scale)^2 out."""
    return EDSR(scale, n_feats, n_resblocks, res_scale)
