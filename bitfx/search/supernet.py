"""A weight-sharing supernet: every edge of every cell holds all candidate operations of a `Space`.

`Supernet(space, channels, layers)` is the network `bitfx.ir.cells.build` would make, except
that each edge is a `MixedEdge` holding one module per candidate operation. `sample(choice)`
picks the operation every edge runs (one sub-network of the space; the bandit core's sample);
edges of the same name in different layers share the choice, not the weights. With
`partial = k > 1` an operation sees only the first C/k channels of its input and the rest
bypass it (max-pooled when the edge is strided), followed by a channel shuffle (partial
channels, as in PC-DARTS).

`binarize_supernet(net, scheme)` makes the convolutions of the cells binary with
`BinaryScheme.binary_layer`, the constructor the `binarize` pass uses, under the pass's
default selection: the stem conv (first), the classifier (last) and depthwise convs stay
float, and a ReLU directly in front of a binary conv becomes the scheme's replacement.

`SupernetEvaluator` turns a sample into a reward for `bitfx.search.bandit.step`: it trains
the sampled sub-network on the next training batches and returns its accuracy on the
held-out batches; with a `parent` (a float supernet) it trains and evaluates the parent on
the same sample and batches and returns (child accuracy, parent accuracy) for CP-NAS; with
an `attack` (`bitfx.train.pgd.PGD`) it trains on adversarial examples and the accuracy is
measured under the attack (ABanditNAS's robust reward).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bitfx.ir.binary import BinaryScheme
from bitfx.ir.cells import CellNetwork
from bitfx.ir.rewrite import is_depthwise
from bitfx.ir.search_ops import FactorizedReduce, make_op
from bitfx.search.space import CellGene, Genotype, Space
from bitfx.train.hooks import after_optimizer_step
from bitfx.train.pgd import PGD

Batches = Sequence[tuple[Tensor, Tensor]]


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """Interleave the channels of `groups` equal groups (ShuffleNet's shuffle)."""
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class MixedEdge(nn.Module):
    """One edge of the supernet: every candidate operation, of which `active` runs."""

    def __init__(self, name: str, ops: Sequence[str], channels: int, stride: int, partial: int = 1) -> None:
        super().__init__()
        if partial < 1 or channels % partial:
            raise ValueError(f"partial={partial} must divide the edge's {channels} channels")
        self.name = name
        self.partial = partial
        self.ops = nn.ModuleDict({op: make_op(op, channels // partial, stride) for op in ops})
        self.bypass = nn.MaxPool2d(2, 2, ceil_mode=True) if stride > 1 else nn.Identity()
        self.active = ops[0]

    def forward(self, x: Tensor) -> Tensor:
        op = self.ops[self.active]
        if self.partial == 1:
            return op(x)
        width = x.shape[1] // self.partial
        return channel_shuffle(torch.cat([op(x[:, :width]), self.bypass(x[:, width:])], dim=1), self.partial)


def supernet_genotype(space: Space) -> Genotype:
    """The genotype whose every edge is named like the bandit core's edge (`cell/node<-source`)."""
    concat = space.concat or tuple(range(space.inputs, space.inputs + space.nodes))
    cells = {
        cell: CellGene(
            tuple(
                tuple((f"{cell}/{node}<-{src}", src) for src in range(node))
                for node in range(space.inputs, space.inputs + space.nodes)
            ),
            concat,
            space.inputs,
        )
        for cell in space.cells
    }
    return Genotype(cells, space.layout)


class Supernet(CellNetwork):
    """The cell network of a space with a `MixedEdge` on every edge; `sample` picks the sub-network."""

    def __init__(
        self,
        space: Space,
        channels: int,
        layers: int,
        *,
        num_classes: int = 10,
        in_channels: int = 3,
        stem_multiplier: int = 3,
        partial: int = 1,
    ) -> None:
        def make_edge(name: str, c: int, stride: int) -> MixedEdge:
            return MixedEdge(name, space.ops, c, stride, partial)

        super().__init__(
            supernet_genotype(space), channels, layers, num_classes, in_channels, stem_multiplier, make_edge
        )
        self.space = space

    def mixed_edges(self) -> list[MixedEdge]:
        return [m for m in self.modules() if isinstance(m, MixedEdge)]

    def sample(self, choice: Mapping[str, str]) -> None:
        """Make every edge run the operation `choice` names for it (edge name → operation)."""
        for edge in self.mixed_edges():
            if choice[edge.name] not in edge.ops:
                raise ValueError(f"edge {edge.name!r} has no operation {choice[edge.name]!r}")
            edge.active = choice[edge.name]


def binarize_supernet(net: Supernet, scheme: BinaryScheme) -> int:
    """Make the cells' non-depthwise convs binary with `scheme` (in place); returns how many."""
    return sum(_binarize_children(module, scheme) for module in list(net.cells.modules()))


def _binarize_children(parent: nn.Module, scheme: BinaryScheme) -> int:
    """Binarize the direct Conv2d children of `parent`; replace a ReLU directly in front as `binarize` does.

    "Directly in front": the previous child of a Sequential, or a FactorizedReduce's own ReLU.
    """
    names = [name for name, _ in parent.named_children()]
    count = 0
    for index, name in enumerate(names):
        conv = getattr(parent, name)
        if not isinstance(conv, nn.Conv2d) or is_depthwise(conv):
            continue
        setattr(parent, name, scheme.binary_layer(conv))
        count += 1
        if isinstance(parent, FactorizedReduce):
            relu_name = "relu"
        elif isinstance(parent, nn.Sequential) and index:
            relu_name = names[index - 1]
        else:
            continue
        if isinstance(getattr(parent, relu_name), nn.ReLU) and scheme.activation is not None:
            replacement = scheme.relu_replacement
            setattr(parent, relu_name, nn.Identity() if replacement is None else replacement(conv.in_channels))
    return count


@dataclass
class SupernetEvaluator:
    """A sample's reward: train it for `steps` batches (cycling through `train`), then its held-out accuracy."""

    child: Supernet
    train: Batches
    valid: Batches
    steps: int = 4
    lr: float = 1e-3
    parent: Supernet | None = None
    attack: PGD | None = None
    samples: int = 0
    _position: int = 0
    _optimizers: dict[int, torch.optim.Optimizer] = field(default_factory=dict)

    def __call__(self, sample: Mapping[str, str]) -> float | tuple[float, float]:
        batches = self._next_batches()
        self.samples += 1
        child = self._train_and_score(self.child, sample, batches)
        if self.parent is None:
            return child
        return child, self._train_and_score(self.parent, sample, batches)

    def warm_up(self, steps: int, seed: int = 0) -> None:
        """Train uniformly random sub-networks for `steps` batches (before the bandit starts)."""
        rng = random.Random(seed)
        edges = self.child.space.edges()
        for _ in range(steps):
            choice = {edge: rng.choice(ops) for edge, ops in edges.items()}
            batches = self._next_batches(1)
            for net in (self.child, self.parent):
                if net is not None:
                    net.sample(choice)
                    self._train(net, batches)

    def _next_batches(self, count: int | None = None) -> list[tuple[Tensor, Tensor]]:
        count = self.steps if count is None else count
        chosen = [self.train[(self._position + i) % len(self.train)] for i in range(count)]
        self._position = (self._position + count) % len(self.train)
        return chosen

    def _train_and_score(self, net: Supernet, sample: Mapping[str, str], batches: Batches) -> float:
        net.sample(sample)
        self._train(net, batches)
        return self._accuracy(net)

    def _train(self, net: Supernet, batches: Batches) -> None:
        if id(net) not in self._optimizers:
            self._optimizers[id(net)] = torch.optim.Adam(net.parameters(), lr=self.lr)
        optimizer = self._optimizers[id(net)]
        net.train()
        for images, labels in batches:
            if self.attack is not None:
                images = self.attack(net, images, labels)
            optimizer.zero_grad()
            F.cross_entropy(net(images), labels).backward()
            optimizer.step()
            after_optimizer_step(net)

    def _accuracy(self, net: Supernet) -> float:
        """Top-1 accuracy on the held-out batches, with batch statistics in BatchNorm (as the sample was trained)."""
        net.train()
        correct = total = 0
        for images, labels in self.valid:
            if self.attack is not None:
                images = self.attack(net, images, labels)
            with torch.no_grad():
                correct += int((net(images).argmax(1) == labels).sum())
            total += len(labels)
        return correct / total
