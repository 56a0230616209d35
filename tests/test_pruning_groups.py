"""Channel dependency analysis: groups, offsets, flatten→linear, fixed and unknown ops."""

import pytest
import torch
from helpers import randomize_batchnorm
from pruning_helpers import masked_reference
from torch import Tensor, nn

from bitfx import zoo
from bitfx.ir import capture, compare_outputs, run_eval
from bitfx.passes import LayerSelection, Pipeline, RankPrune
from bitfx.passes.prune.groups import analyze_channels


class ConcatNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 3, 3, padding=1)
        self.bn, self.relu = nn.BatchNorm2d(7), nn.ReLU()
        self.c = nn.Conv2d(7, 6, 1)
        self.head = nn.Sequential(nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 2))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.c(self.relu(self.bn(torch.cat([self.a(x), self.b(x)], dim=1)))))


class FlattenNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.pool = nn.Conv2d(3, 4, 3, padding=1), nn.MaxPool2d(2)
        self.fc1, self.relu, self.fc2 = nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(torch.relu(self.conv(x)))
        return self.fc2(self.relu(self.fc1(x.view(x.size(0), -1))))


class Wrapped(nn.Module):
    """conv(3→8) → `middle` → conv(…→4) → pool → linear: `middle` is the op under test."""

    def __init__(self, middle, channels: int = 8) -> None:
        super().__init__()
        self.first, self.middle = nn.Conv2d(3, 8, 3, padding=1), middle
        self.last = nn.Conv2d(channels, 4, 1)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.last(self.middle(torch.relu(self.first(x)))))


class Roll(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return torch.roll(x, 1, dims=1)


class Reused(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(torch.relu(self.conv(x)))


class Gate(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.score = nn.Conv2d(8, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(self.score(x))


def _group(analysis, lead):
    return next(g for g in analysis.groups if g.layers[0] == lead)


def _data(shape=(2, 3, 8, 8)):
    return [torch.randn(shape, generator=torch.Generator().manual_seed(i)) for i in range(2)]


def _check_equivalent(model, prune):
    data = _data()
    gm = capture(randomize_batchnorm(model), data[0])
    plan = prune.plan(gm, data)
    pruned = Pipeline([prune]).run(gm, data=data).graph_module
    x = torch.randn(3, 3, 8, 8)
    error = max(
        e.max_rel_error
        for e in compare_outputs(run_eval(masked_reference(gm, plan, prune.prune_classifier), x), run_eval(pruned, x))
    )
    assert error < 1e-5
    return gm, plan, pruned


def test_resnet_stage_groups_join_the_residual_convs_and_the_downsample_shortcut():
    analysis = analyze_channels(capture(zoo.resnet20(), torch.randn(1, 3, 32, 32)))
    assert _group(analysis, "conv1").layers == ("conv1", "layers.0.conv2", "layers.1.conv2", "layers.2.conv2")
    stage2 = next(g for g in analysis.groups if "layers.3.shortcut.0" in g.layers)
    assert set(stage2.layers) == {"layers.3.shortcut.0", "layers.3.conv2", "layers.4.conv2", "layers.5.conv2"}
    assert len(stage2.channels) == 32 and len(stage2.prunable()) == 32
    assert _group(analysis, "layers.0.conv1").layers == ("layers.0.conv1",)


def test_concat_places_each_input_at_its_offset_in_the_following_batchnorm_and_conv():
    gm = capture(ConcatNet(), torch.randn(1, 3, 8, 8))
    analysis = analyze_channels(gm)
    a, b = _group(analysis, "a"), _group(analysis, "b")
    removed = {a.channels[1], b.channels[0], b.channels[2]}
    assert analysis.kept_positions("bn", removed) == [0, 2, 3, 5]
    assert analysis.kept_positions("c", removed) == list(range(6))
    original, plan, pruned = _check_equivalent(ConcatNet(), RankPrune(rate=0.5))
    kept = [k for k in range(4) if k not in plan.groups[0].removed_by_layer["a"]] + [
        4 + k for k in range(3) if k not in plan.groups[1].removed_by_layer["b"]
    ]
    assert pruned.get_submodule("bn").num_features == pruned.get_submodule("c").in_channels == len(kept) == 4
    assert torch.equal(pruned.get_submodule("bn").running_var, original.get_submodule("bn").running_var[kept])
    assert torch.equal(pruned.get_submodule("c").weight, original.get_submodule("c").weight[:, kept])


def test_flatten_maps_each_channel_to_its_h_times_w_linear_columns():
    gm = capture(FlattenNet(), torch.randn(1, 3, 4, 4))
    analysis = analyze_channels(gm)
    conv = _group(analysis, "conv")
    flat = next(n.name for n in gm.graph.nodes if n.target == "view")
    assert [analysis.channel_of(s) for s in analysis.maps[flat]] == [c for c in conv.channels for _ in range(4)]
    data = [torch.randn(2, 3, 4, 4) for _ in range(2)]
    prune = RankPrune(rate=0.5)
    plan = prune.plan(gm, data)
    pruned = Pipeline([prune]).run(gm, data=data).graph_module
    gone = plan.groups[0].removed_by_layer["conv"]
    assert len(gone) == 2
    columns = [4 * c + k for c in range(4) if c not in gone for k in range(4)]
    hidden = [h for h in range(8) if h not in plan.groups[1].removed_by_layer["fc1"]]
    assert torch.equal(pruned.get_submodule("fc1").weight, gm.get_submodule("fc1").weight[hidden][:, columns])
    assert torch.equal(pruned.get_submodule("fc2").weight, gm.get_submodule("fc2").weight[:, hidden])


def test_vgg_flatten_to_linear_over_4x4_maps_is_pruned_only_when_asked():
    gm = capture(zoo.vgg_small(), torch.randn(1, 3, 32, 32))
    assert _group(analyze_channels(gm), "features.17").prunable() == []
    last = _group(analyze_channels(gm, prune_classifier=True), "features.17")
    assert len(last.prunable()) == 512
    assert _group(analyze_channels(gm), "features.17").fixed[last.channels[0]] == (
        "input of the classifier 'fc' (prune_classifier=True prunes it)",
    )


def test_an_op_the_analysis_does_not_know_stops_pruning_of_its_group_only_with_its_name():
    gm = capture(Wrapped(Roll()), torch.randn(1, 3, 8, 8))
    assert _group(analyze_channels(gm), "first").blocking_ops() == ["function roll (node 'roll')"]
    data = _data()
    result = Pipeline([RankPrune(rate=0.5, prune_classifier=True)]).run(gm, data=data)
    record = result.records[0]
    assert record.modified  # the rest of the model is pruned
    assert "function roll (node 'roll')" in record.stats["skipped"]["first"]
    assert result.graph_module.get_submodule("first").out_channels == gm.get_submodule("first").out_channels
    excluded = RankPrune(rate=0.5, prune_classifier=True, rates=LayerSelection(by_name={"first": 0.0}))
    plan = excluded.plan(gm, data)
    assert plan.groups[0].removed == () and plan.groups[0].blocked_by == ("function roll (node 'roll')",)
    assert plan.groups[1].removed  # the conv after the unknown op still prunes its own outputs


def test_pixel_shuffle_is_unknown_and_named():
    gm = capture(Wrapped(nn.PixelShuffle(2), channels=2), torch.randn(1, 3, 8, 8))
    assert _group(analyze_channels(gm), "first").blocking_ops() == ["module 'middle' (PixelShuffle)"]


@pytest.mark.parametrize(
    ("middle", "reason"),
    [
        (nn.Conv2d(8, 8, 3, padding=1, groups=2), "grouped conv 'middle' (groups=2) keeps its channels"),
        (Reused(), "'middle.conv' is called from 2 places"),
        (nn.ConvTranspose2d(8, 8, 3, padding=1), "transposed conv 'middle' keeps its channels"),
    ],
)
def test_layers_that_cannot_shrink_keep_the_channels_they_touch(middle, reason):
    analysis = analyze_channels(capture(Wrapped(middle), torch.randn(1, 3, 8, 8)))
    first = _group(analysis, "first")
    assert first.prunable() == [] and all(reason in r for r in first.fixed.values())
    _check_equivalent(Wrapped(middle), RankPrune(rate=0.5))


def test_depthwise_conv_passes_channels_through_and_broadcast_gates_are_understood():
    depthwise = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8), nn.ReLU6(), Gate())
    gm, plan, pruned = _check_equivalent(Wrapped(depthwise), RankPrune(rate=0.5))
    first = plan.groups[0]
    assert first.layers == ("first",) and len(first.removed) == 4
    assert pruned.get_submodule("middle.0").groups == pruned.get_submodule("middle.3.score").in_channels == 4
    gate = next(g for g in plan.groups if g.layers == ("middle.3.score",))
    assert gate.prunable == 0 and "broadcast over channels" in gate.kept_because[0]


def test_mobilenet_groups_the_expansion_with_its_depthwise_conv_and_the_residual_projections():
    gm = capture(zoo.mobilenet_v2(), torch.randn(1, 3, 32, 32))
    analysis = analyze_channels(gm)
    expand = _group(analysis, "features.5.block.0")
    assert [s.node for s in expand.spaces] == ["features_5_block_0"]
    dw = next(n for n in gm.graph.nodes if n.target == "features.5.block.3")
    assert [analysis.channel_of(s) for s in analysis.maps[dw.name]] == list(expand.channels)
    assert _group(analysis, "features.6.block.6").layers == (
        "features.6.block.6",
        "features.7.block.6",
        "features.8.block.6",
    )
