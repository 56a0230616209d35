"""Deployed binary layers: the fixed tensors of a trained binary layer, run by the `bitfx` ops.

`BinaryConv2d.deployed()` / `BinaryLinear.deployed()` build these; the ONNX lowerings export
them (each becomes one `bitfx::binary_conv2d` / `bitfx::binary_gemm` node, after the standard
ops of its `input_transform` when it has one, e.g. the `Sub` of RSign's threshold). Buffers:
`weight` (±1), `scale`, `bias`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor, nn

from bitfx.ir.binary.ops import binary_conv2d, binary_gemm


@dataclass(frozen=True)
class ConvGeometry:
    """The attributes of `bitfx.BinaryConv2d` (docs/binary-format.md)."""

    kernel_shape: tuple[int, int]
    strides: tuple[int, int]
    pads: tuple[int, int, int, int]  # top, left, bottom, right
    dilations: tuple[int, int]
    group: int
    in_channels: int
    pad_value: int
    binarize_input: bool


def run_binary_conv2d(x: Tensor, geometry: ConvGeometry, weight: Tensor, scale: Tensor, bias: Tensor) -> Tensor:
    """The `bitfx::binary_conv2d` op with the attributes of `geometry`."""
    g = geometry
    return binary_conv2d(
        x,
        weight,
        scale,
        bias,
        list(g.kernel_shape),
        list(g.strides),
        list(g.pads),
        list(g.dilations),
        g.group,
        g.in_channels,
        g.pad_value,
        int(g.binarize_input),
    )


class _DeployedBinaryLayer(nn.Module):
    bitfx_leaf = True
    bitfx_storage_bits = {"weight": 1}

    def __init__(self, weight: Tensor, scale: Tensor, bias: Tensor, input_transform: nn.Module | None) -> None:
        super().__init__()
        self.register_buffer("weight", weight.detach().clone())
        self.register_buffer("scale", scale.detach().clone())
        self.register_buffer("bias", bias.detach().clone())
        self.input_transform = input_transform

    def _input(self, x: Tensor) -> Tensor:
        return x if self.input_transform is None else self.input_transform(x)


class DeployedBinaryConv2d(_DeployedBinaryLayer):
    """A binary conv with fixed ±1 weights, per-channel scale and bias (and input transform)."""

    def __init__(
        self,
        geometry: ConvGeometry,
        weight: Tensor,
        scale: Tensor,
        bias: Tensor,
        input_transform: nn.Module | None = None,
    ) -> None:
        super().__init__(weight, scale, bias, input_transform)
        self.geometry = geometry

    def forward(self, x: Tensor) -> Tensor:
        return run_binary_conv2d(self._input(x), self.geometry, self.weight, self.scale, self.bias)

    def bitfx_macs(self, output_shape: tuple[int, ...]) -> int:
        """Binary multiply-accumulates per sample."""
        return math.prod(output_shape[1:]) * self.weight[0].numel()

    def extra_repr(self) -> str:
        return str(self.geometry)


class DeployedBinaryLinear(_DeployedBinaryLayer):
    """A binary linear layer with fixed ±1 weights, per-channel scale and bias (and input transform)."""

    def __init__(
        self,
        binarize_input: bool,
        weight: Tensor,
        scale: Tensor,
        bias: Tensor,
        input_transform: nn.Module | None = None,
    ) -> None:
        super().__init__(weight, scale, bias, input_transform)
        self.binarize_input = binarize_input

    def forward(self, x: Tensor) -> Tensor:
        return binary_gemm(
            self._input(x), self.weight, self.scale, self.bias, self.weight.shape[1], int(self.binarize_input)
        )

    def bitfx_macs(self, output_shape: tuple[int, ...]) -> int:
        return math.prod(output_shape[1:]) * self.weight.shape[1]

    def extra_repr(self) -> str:
        return f"{self.weight.shape[1]}, {self.weight.shape[0]}, binarize_input={self.binarize_input}"
