"""`build`: a plain nn.Module from a genotype (a frontend, like `capture`).

The network is the DARTS CIFAR network: a stem (3×3 conv to `stem_multiplier`·C channels,
BN), `layers` cells, global average pooling and a linear classifier. The channel count
doubles at the reduction layers L//3 and 2L//3, where edges leaving a cell input use stride 2.
Each cell first brings its inputs to C channels: with two inputs (DARTS) the older one goes
through `FactorizedReduce` when the previous cell reduced, otherwise through ReLU-1×1 conv-BN;
with one input (ABanditNAS) the previous cell's output goes through ReLU-1×1 conv-BN. Every
intermediate node is the sum of its edges' operations; the cell's output concatenates the
`concat` nodes. Auxiliary heads and drop-path are training devices and are not built.

The result is traceable by `capture`; then `binarize` and the lowerings work as for any model.
`make_edge(op, channels, stride)` makes each edge's module (default: `make_op`); the search
supernet passes one that puts every candidate operation on an edge.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from bitfx.ir.search_ops import FactorizedReduce, ReLUConvBN, make_op

MakeEdge = Callable[[str, int, int], nn.Module]


class Cell(nn.Module):
    """One cell of a genotype: preprocessing of its inputs, one op per edge, sum per node, concat."""

    def __init__(
        self,
        gene,
        c_inputs: list[int],
        channels: int,
        reduction: bool,
        reduction_prev: bool,
        make_edge: MakeEdge = make_op,
    ) -> None:
        super().__init__()
        self.sources = [[src for _, src in edges] for edges in gene.nodes]
        self.concat = list(gene.concat)
        self.inputs = gene.inputs
        pre = []
        for index, c_in in enumerate(c_inputs):
            older = index == 0 and len(c_inputs) == 2
            pre.append(
                FactorizedReduce(c_in, channels) if older and reduction_prev else ReLUConvBN(c_in, channels, 1, 1, 0)
            )
        self.preprocess = nn.ModuleList(pre)
        self.edges = nn.ModuleList(
            nn.ModuleList(make_edge(op, channels, 2 if reduction and src < gene.inputs else 1) for op, src in edges)
            for edges in gene.nodes
        )
        self.out_channels = len(self.concat) * channels

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        states = [pre(x) for pre, x in zip(self.preprocess, inputs)]
        for ops, sources in zip(self.edges, self.sources):
            node = ops[0](states[sources[0]])
            for op, src in zip(ops[1:], sources[1:]):
                node = node + op(states[src])
            states.append(node)
        return torch.cat([states[i] for i in self.concat], dim=1)


class CellNetwork(nn.Module):
    """Stem, cells of a genotype, global pooling, classifier."""

    def __init__(
        self,
        genotype,
        channels: int,
        layers: int,
        num_classes: int = 10,
        in_channels: int = 3,
        stem_multiplier: int = 3,
        make_edge: MakeEdge = make_op,
    ) -> None:
        super().__init__()
        c_stem = stem_multiplier * channels
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c_stem, 3, padding=1, bias=False), nn.BatchNorm2d(c_stem))
        self.two_inputs = []
        c_prev_prev, c_prev, c = c_stem, c_stem, channels
        reduction_prev = False
        cells = []
        for layer in range(layers):
            name, reduction = genotype.cell_for_layer(layer, layers)
            gene = genotype.cells[name]
            if reduction:
                c *= 2
            c_inputs = [c_prev_prev, c_prev] if gene.inputs == 2 else [c_prev]
            cell = Cell(gene, c_inputs, c, reduction, reduction_prev, make_edge)
            cells.append(cell)
            self.two_inputs.append(gene.inputs == 2)
            reduction_prev = reduction
            c_prev_prev, c_prev = c_prev, cell.out_channels
        self.cells = nn.ModuleList(cells)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = s1 = self.stem(x)
        for cell, two in zip(self.cells, self.two_inputs):
            s0, s1 = s1, (cell(s0, s1) if two else cell(s1))
        return self.classifier(torch.flatten(self.pool(s1), 1))


def build(
    genotype, channels: int, layers: int, *, num_classes: int = 10, in_channels: int = 3, stem_multiplier: int = 3
) -> nn.Module:
    """The network of `genotype` with `channels` initial channels and `layers` cells (a plain nn.Module)."""
    if layers < 1 or channels < 1:
        raise ValueError(f"build needs channels >= 1 and layers >= 1, got channels={channels}, layers={layers}")
    return CellNetwork(genotype, channels, layers, num_classes, in_channels, stem_multiplier)
