"""Activations that binary networks put between binary layers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class RPReLU(nn.Module):
    """ReActNet's RPReLU: PReLU(x − γ_c) + ζ_c with learnable per-channel γ, slope and ζ
    (Liu et al., ECCV 2020). Starts as a PReLU with slope `slope` and no shifts."""

    bitfx_leaf = True

    def __init__(self, channels: int, slope: float = 0.25) -> None:
        super().__init__()
        self.shift_in = nn.Parameter(torch.zeros(channels))
        self.slope = nn.Parameter(torch.full((channels,), slope))
        self.shift_out = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        shape = (1, -1, *([1] * (x.dim() - 2)))
        return F.prelu(x - self.shift_in.view(shape), self.slope) + self.shift_out.view(shape)

    def extra_repr(self) -> str:
        return f"{self.slope.numel()}"
