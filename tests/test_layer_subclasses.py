"""Conv / linear / BatchNorm subclasses defined outside torch.nn, kept whole (leaf modules), in every pass:
rewritten like their torch.nn base when they compute like it, otherwise left alone with the reason."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from helpers import randomize_batchnorm
from torch import Tensor, nn

from bitfx.ir import capture
from bitfx.ir.binary import BinaryConv2d
from bitfx.ir.quant import QuantConv2d
from bitfx.passes import Pipeline
from bitfx.passes.prune.groups import analyze_channels


class PlainConv(nn.Conv2d):
    """Adds nothing to Conv2d."""


class PlainBN(nn.BatchNorm2d):
    """Adds nothing to BatchNorm2d."""


class ScaledConv(nn.Conv2d):
    """Computes something else than Conv2d: its output is doubled."""

    def forward(self, x: Tensor) -> Tensor:
        return 2 * super().forward(x)


class StatefulConv(nn.Conv2d):
    """Computes like Conv2d but holds a per-channel buffer of its own."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.register_buffer("usage", torch.zeros(self.out_channels))


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.plain, self.bn = PlainConv(8, 8, 3, padding=1), PlainBN(8)
        self.scaled, self.stateful = ScaledConv(8, 8, 3, padding=1), StatefulConv(8, 8, 3, padding=1)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))

    def forward(self, x: Tensor) -> Tensor:
        x = F.hardtanh(self.stem(x))
        x = F.hardtanh(self.bn(self.plain(x)))
        return self.head(self.stateful(F.hardtanh(self.scaled(x))))


LEAVES = [PlainConv, PlainBN, ScaledConv, StatefulConv]


def _run(spec: str) -> tuple[torch.fx.GraphModule, dict]:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8)
    gm = capture(randomize_batchnorm(Net()).eval(), x, leaf_modules=LEAVES)
    result = Pipeline.from_spec(spec).run(gm, data=[x])
    return result.graph_module, result.records[-1].stats


def test_fuse_bn_folds_into_a_subclass_that_computes_like_its_base() -> None:
    _, stats = _run("fuse_bn")
    assert stats["pairs"] == ["plain+bn"]


def test_binarize_rewrites_subclasses_that_compute_like_conv2d_and_says_why_not_the_others() -> None:
    gm, stats = _run("binarize")
    assert isinstance(gm.get_submodule("plain"), BinaryConv2d)
    assert isinstance(gm.get_submodule("stateful"), BinaryConv2d)
    assert "ScaledConv overrides forward" in stats["skipped"]["scaled"]


def test_pams_quantizes_subclasses_that_compute_like_conv2d_and_says_why_not_the_others() -> None:
    gm, stats = _run("pams(float_ends=false)")
    assert isinstance(gm.get_submodule("plain"), QuantConv2d)
    assert "ScaledConv overrides forward" in stats["skipped"]["scaled"]


def _group(analysis, lead: str):
    return next(g for g in analysis.groups if g.layers[0] == lead)


def test_pruning_treats_a_stateless_subclass_as_its_base_and_a_stateful_one_as_unknown() -> None:
    gm = capture(Net().eval(), torch.randn(1, 3, 8, 8), leaf_modules=LEAVES)
    analysis = analyze_channels(gm)
    layers = {layer for group in analysis.groups for layer in group.layers}
    assert "plain" in layers and "stateful" not in layers and "scaled" not in layers
    kept = {space.node: space.kept_because for space in analysis.spaces}
    assert "a Conv2d subclass that overrides forward" in kept["scaled"]
    assert "a Conv2d subclass with state of its own" in kept["stateful"]
    assert _group(analysis, "plain").blocking_ops() == [
        "module 'scaled' (ScaledConv, a Conv2d subclass that overrides forward)"
    ]


def test_pruning_shrinks_a_stateless_subclass_into_its_torch_nn_base() -> None:
    gm, _ = _run("rank_prune(rate=0.5, rates={'by_name': {'plain': 0.0}})")  # plain's outputs reach ScaledConv
    assert gm.get_submodule("stem").out_channels == 4 and gm.get_submodule("plain").in_channels == 4
    assert type(gm.get_submodule("plain")) is nn.Conv2d and gm.get_submodule("plain").out_channels == 8
