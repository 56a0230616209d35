"""The channel analysis on ops real CNNs put between convs: shape queries, eval-mode identities, upsampling,
squeeze-and-excitation gates, element-wise activations, channel shuffle, functional batch norm."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import randomize_batchnorm
from pruning_helpers import masked_reference
from torch import Tensor, nn

from bitfx.ir import capture, compare_outputs, run_eval
from bitfx.passes import Pipeline, RankPrune
from bitfx.passes.prune.groups import analyze_channels


class Around(nn.Module):
    """conv(3→8) → ReLU → `middle` → conv(8→4) → pool → linear: `middle` is the op under test."""

    def __init__(self, middle: nn.Module) -> None:
        super().__init__()
        self.first, self.middle = nn.Conv2d(3, 8, 3, padding=1), middle
        self.last = nn.Conv2d(8, 4, 1)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.last(self.middle(torch.relu(self.first(x)))))


class ShapeChecks(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        torch._assert(x.ndim == 4, "expects NCHW")
        torch._assert(x.dim() == 4, "expects NCHW")
        return F.dropout2d(F.interpolate(x, scale_factor=2.0, mode="nearest"), training=self.training)


class SqueezeExcite(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.reduce, self.expand = nn.Conv2d(8, 2, 1), nn.Conv2d(2, 8, 1)

    def forward(self, x: Tensor) -> Tensor:
        gate = F.hardsigmoid(self.expand(F.silu(self.reduce(x.mean((2, 3), keepdim=True)))))
        return F.gelu(F.hardswish(x * gate))


class Shuffle(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape[0], x.shape[1], x.shape[2], x.shape[3]
        return x.view(b, 2, c // 2, h, w).transpose(1, 2).reshape(b, c, h, w)


class FunctionalBN(nn.BatchNorm2d):
    def forward(self, x: Tensor) -> Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.1, self.eps)


def _data() -> list[Tensor]:
    return [torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(i)) for i in range(2)]


def _prune(model: nn.Module) -> tuple[object, float]:
    data = _data()
    gm = capture(randomize_batchnorm(model).eval(), data[0])
    prune = RankPrune(rate=0.5)
    plan = prune.plan(gm, data)
    pruned = Pipeline([prune]).run(gm, data=data).graph_module
    x = torch.randn(3, 3, 8, 8)
    reference = run_eval(masked_reference(gm, plan, prune.prune_classifier), x)
    return plan, max(e.max_rel_error for e in compare_outputs(reference, run_eval(pruned, x)))


@pytest.mark.parametrize(
    "middle",
    [ShapeChecks(), nn.Upsample(scale_factor=2), nn.AlphaDropout(0.1), SqueezeExcite()],
    ids=["ndim-interpolate-dropout2d", "upsample", "alpha-dropout", "se-gate"],
)
def test_channel_wise_ops_and_gates_let_the_first_conv_be_pruned(middle: nn.Module) -> None:
    plan, error = _prune(Around(middle))
    first = next(g for g in plan.groups if g.layers[0] == "first")
    assert len(first.removed) == 4 and not first.blocked_by
    assert error < 1e-5


def test_the_convs_of_a_squeeze_and_excitation_gate_join_the_group_of_what_they_gate() -> None:
    gm = capture(Around(SqueezeExcite()), torch.randn(1, 3, 8, 8))
    groups = {g.layers[0]: g.layers for g in analyze_channels(gm).groups}
    assert set(groups["first"]) == {"first", "middle.expand"}
    assert groups["middle.reduce"] == ("middle.reduce",)


def test_channel_shuffle_keeps_the_channels_it_moves_and_says_so() -> None:
    gm = capture(Around(Shuffle()), torch.randn(1, 3, 8, 8))
    first = next(g for g in analyze_channels(gm).groups if g.layers[0] == "first")
    assert not first.blocked and not first.prunable()
    assert any("moved across the channel axis by method .view()" in r for rs in first.fixed.values() for r in rs)
    plan, error = _prune(Around(Shuffle()))  # runs: the shuffled channels are kept, not an unknown op
    kept = next(g for g in plan.groups if g.layers[0] == "first")
    assert error < 1e-5 and kept.removed == () and "moved across the channel axis" in kept.kept_because[0]


def test_functional_batch_norm_keeps_its_channels_and_says_so() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.bn, self.b = nn.Conv2d(3, 8, 3), FunctionalBN(8), nn.Conv2d(8, 8, 3)
            self.c = nn.Conv2d(8, 4, 1)
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))

        def forward(self, x: Tensor) -> Tensor:
            return self.head(self.c(F.relu(self.b(F.relu(self.bn(self.a(x)))))))

    gm = capture(Net().eval(), torch.randn(1, 3, 8, 8))
    a = next(g for g in analyze_channels(gm).groups if g.layers[0] == "a")
    assert not a.blocked and not a.prunable()
    assert any("normalised by function batch_norm" in r for rs in a.fixed.values() for r in rs)
    plan, error = _prune(Net())
    assert error < 1e-5 and next(g for g in plan.groups if g.layers[0] == "b").removed


class ResNetDBlock(nn.Module):
    """A strided residual block whose shortcut is average pooling then a 1×1 conv (ResNet-D)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.conv1, self.bn1 = nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.down = nn.Sequential(nn.AvgPool2d(2, ceil_mode=True), nn.Conv2d(8, 16, 1), nn.BatchNorm2d(16))
        self.out = nn.Conv2d(16, 4, 1)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.stem(x))
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return self.head(self.out(F.relu(y + self.down(x))))


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(3, 8, 3, padding=1)
        self.mix = nn.Conv2d(16, 4, 1)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return self.head(self.mix(torch.cat([F.relu(self.a(x)), F.relu(self.b(y))], dim=1)))


def test_an_average_pool_shortcut_joins_the_residual_group() -> None:
    gm = capture(ResNetDBlock().eval(), torch.randn(1, 3, 8, 8))
    groups = {g.layers[0]: set(g.layers) for g in analyze_channels(gm).groups}
    assert groups["conv2"] == {"conv2", "down.1"}
    plan, error = _prune(ResNetDBlock())
    assert error < 1e-5 and next(g for g in plan.groups if g.layers[0] == "conv2").removed


def test_a_model_with_two_inputs_prunes_both_branches() -> None:
    data = [((torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)), torch.zeros(2)) for _ in range(2)]
    model = TwoInputs().eval()
    gm = capture(model, data[0][0])
    prune = RankPrune(rate=0.5)
    plan = prune.plan(gm, data)
    pruned = Pipeline([prune]).run(gm, data=data).graph_module
    assert pruned.get_submodule("a").out_channels == pruned.get_submodule("b").out_channels == 4
    assert pruned.get_submodule("mix").in_channels == 8
    x = (torch.randn(3, 3, 8, 8), torch.randn(3, 3, 8, 8))
    reference = run_eval(masked_reference(gm, plan, prune.prune_classifier), x)
    assert max(e.max_rel_error for e in compare_outputs(reference, run_eval(pruned, x))) < 1e-5
