"""`build_abandit`: the ABanditNAS CIFAR network as its authors' test code defines it.

`bitfx.ir.cells.build` makes any genotype with DARTS's operations and cell order. The ABanditNAS
authors evaluate their genotypes (e.g. `ABANDIT_CIFAR_1`, 48 channels, 10 layers) with another
network, built here with its own operation definitions:

| name / part      | ABanditNAS definition                                                        |
|------------------|------------------------------------------------------------------------------|
| sep_conv_k       | ReLU, depthwise k×k (strided), BN, then ReLU, **full** k×k conv C→C, BN       |
| max/avg_pool_3x3 | pooling, then BN                                                             |
| conv_k, skip     | as in `search_ops` (full dilated conv; identity or `FactorizedReduce`)       |
| gab_filt_3x3     | denoising block around a C→C Gabor conv: output channel o applies its kernel |
|                  | to every input channel and sums                                              |
| dtp_blok_3x3     | denoising block around a parameter-free dot-product filter, divided by C·h·w |
| denoising block  | x + BN(filter(x)) (BN γ = β = 0 at start), then bilinear down-sampling       |
|                  | (`align_corners=True`) when stride 2                                         |
| cell order       | v cells over L layers: n = (L−2)/(v−2), layer i uses cell i/n, (i+1)/n,      |
|                  | (i+2)/n (integer division) in the three stages (6 cells, 10 layers:          |
|                  | a a b b c d d e f f); v = L uses cell i at layer i                           |
| extra blocks     | a `dtp_blok` denoising block on the cell output after layers L/4, 2L/4, 3L/4 |
| auxiliary head   | optional, on the output of layer 2L/3 (DARTS's CIFAR head)                   |

The stem, the reductions at L/3 and 2L/3, the cells' one-input preprocessing and the classifier
are those of `cells.build`. The authors' input normalization (fixed mean/std, no parameters) is
not built: the model takes normalized images.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bitfx.ir.cells import Cell
from bitfx.ir.search_ops import OPS, DenoisingBlock, gabor_kernel


class SepConvFull(nn.Sequential):
    """ReLU → depthwise k×k (strided) → BN → ReLU → full k×k conv C→C → BN."""

    def __init__(self, c: int, kernel: int, stride: int, padding: int) -> None:
        super().__init__(
            nn.ReLU(),
            nn.Conv2d(c, c, kernel, stride, padding, groups=c, bias=False),
            nn.BatchNorm2d(c),
            nn.ReLU(),
            nn.Conv2d(c, c, kernel, 1, padding, bias=False),
            nn.BatchNorm2d(c),
        )


class PoolBN(nn.Sequential):
    """3×3 max or average pooling (padding 1, the average excludes the padding), then BN."""

    def __init__(self, kind: str, c: int, stride: int) -> None:
        pool = nn.MaxPool2d(3, stride, 1) if kind == "max" else nn.AvgPool2d(3, stride, 1, count_include_pad=False)
        super().__init__(pool, nn.BatchNorm2d(c))


class GaborConvFull(nn.Module):
    """A C→C 3×3 conv whose output channel o applies its learnable Gabor kernel to every input channel.

    Five raw parameters per output channel, mapped as in `search_ops.gabor_kernel` (whose grid
    {−1, 0, 1} is the integer grid of a 3×3 kernel); the first kernel axis is x, the second y.
    A bitfx IR module (kept whole by `capture`); `fold_gabor` does not fold it.
    """

    bitfx_leaf = True

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.lam = nn.Parameter(torch.rand(channels))
        self.theta = nn.Parameter(torch.randn(channels))
        self.psi = nn.Parameter(torch.randn(channels) * 0.02)
        self.sigma = nn.Parameter(torch.randn(channels))
        self.gamma = nn.Parameter(torch.zeros(channels))

    def kernel(self) -> torch.Tensor:
        """The (C, C, 3, 3) kernel: each output channel's Gabor kernel, repeated over the input channels."""
        per_channel = gabor_kernel(self.theta, self.sigma, self.lam, self.psi, self.gamma, 3).transpose(-1, -2)
        return per_channel.expand(-1, self.theta.shape[0], -1, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.kernel(), padding=1)


class DotProductMean(nn.Module):
    """Parameter-free non-local filter: y_i = Σ_j (x_i·x_j) x_j / (C·h·w) over the h·w positions."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = torch.flatten(x, 2)
        affinity = torch.bmm(flat.transpose(1, 2), flat)
        return (torch.bmm(flat, affinity) / (flat.shape[1] * flat.shape[2])).view_as(x)


ABANDIT_OPS = {
    **OPS,
    "max_pool_3x3": lambda c, s: PoolBN("max", c, s),
    "avg_pool_3x3": lambda c, s: PoolBN("avg", c, s),
    "sep_conv_3x3": lambda c, s: SepConvFull(c, 3, s, 1),
    "sep_conv_5x5": lambda c, s: SepConvFull(c, 5, s, 2),
    "gab_filt_3x3": lambda c, s: DenoisingBlock(c, s, GaborConvFull(c), downsample_last=True),
    "dtp_blok_3x3": lambda c, s: DenoisingBlock(c, s, DotProductMean(), downsample_last=True),
}


def make_abandit_op(name: str, channels: int, stride: int) -> nn.Module:
    """The ABanditNAS operation `name` on `channels` channels with `stride`."""
    if name not in ABANDIT_OPS:
        raise ValueError(f"unknown cell operation {name!r}; known: {', '.join(sorted(ABANDIT_OPS))}")
    return ABANDIT_OPS[name](channels, stride)


def abandit_cell_index(layer: int, layers: int, cells: int) -> int:
    """Which of `cells` cells layer `layer` of `layers` uses in the ABanditNAS network."""
    if cells == layers:
        return layer
    repeat = (layers - 2) // (cells - 2)
    offset = 0 if layer <= layers // 3 + 1 else 1 if layer <= 2 * layers // 3 + 1 else 2
    return (layer + offset) // repeat


class AuxiliaryHeadCIFAR(nn.Module):
    """DARTS's CIFAR auxiliary classifier on an 8×8 feature map: ReLU, 5×5/3 pooling, 1×1 and 2×2 convs, linear."""

    def __init__(self, c: int, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(),
            nn.AvgPool2d(5, stride=3, count_include_pad=False),
            nn.Conv2d(c, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(),
            nn.Conv2d(128, 768, 2, bias=False),
            nn.BatchNorm2d(768),
            nn.ReLU(),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class ABanditNetwork(nn.Module):
    """Stem, one-input cells in the ABanditNAS order with denoising blocks, pooling, classifier (and auxiliary head).

    `forward` returns the logits; with the auxiliary head in training mode it returns
    (logits, auxiliary logits), as the auxiliary loss needs both.
    """

    def __init__(
        self, genotype, channels: int, layers: int, auxiliary: bool, num_classes: int, in_channels: int
    ) -> None:
        super().__init__()
        genes = list(genotype.cells.values())
        for name, gene in genotype.cells.items():
            if gene.inputs != 1 or any(len(edges) != 1 for edges in gene.nodes):
                raise ValueError(f"the ABanditNAS network needs one input and one edge per node; cell {name!r} has not")
        if len(genes) != layers and not 3 <= len(genes) <= layers:
            raise ValueError(
                f"the ABanditNAS cell order needs 3 to {layers} cells for {layers} layers, got {len(genes)}"
            )
        order = [abandit_cell_index(layer, layers, len(genes)) for layer in range(layers)]
        if max(order) >= len(genes):
            raise ValueError(f"the ABanditNAS cell order of {layers} layers runs past the {len(genes)} cells: {order}")
        c_prev = 3 * channels
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c_prev, 3, padding=1, bias=False), nn.BatchNorm2d(c_prev))
        c = channels
        cells = []
        self.auxiliary_after = 2 * layers // 3 if auxiliary else -1
        for layer in range(layers):
            reduction = layer in (layers // 3, 2 * layers // 3)
            if reduction:
                c *= 2
            cell = Cell(genes[order[layer]], [c_prev], c, reduction, False, make_abandit_op)
            c_prev = cell.out_channels
            if layer in (layers // 4, 2 * layers // 4, 3 * layers // 4):
                cell = nn.Sequential(cell, DenoisingBlock(c_prev, 1, DotProductMean()))
            cells.append(cell)
            if layer == self.auxiliary_after:
                self.auxiliary_head = AuxiliaryHeadCIFAR(c_prev, num_classes)
        self.cells = nn.ModuleList(cells)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        x = self.stem(x)
        aux = None
        for layer, cell in enumerate(self.cells):
            x = cell(x)
            if layer == self.auxiliary_after and self.training:
                aux = self.auxiliary_head(x)
        logits = self.classifier(torch.flatten(self.pool(x), 1))
        return logits if aux is None else (logits, aux)


def build_abandit(
    genotype,
    channels: int = 48,
    layers: int = 10,
    *,
    auxiliary: bool = False,
    num_classes: int = 10,
    in_channels: int = 3,
) -> nn.Module:
    """The ABanditNAS network of a one-input genotype (e.g. `ABANDIT_CIFAR_1`), as its authors' test code builds it."""
    if layers < 1 or channels < 1:
        raise ValueError(f"build_abandit needs channels >= 1 and layers >= 1, got channels={channels}, layers={layers}")
    return ABanditNetwork(genotype, channels, layers, auxiliary, num_classes, in_channels)
