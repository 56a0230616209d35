"""`rank_prune`: HRank scores, channel choice, physical removal equal to masking, rates, errors."""

import re

import numpy as np
import pytest
import torch
from helpers import assert_same_state, randomize_batchnorm, state_snapshot
from pruning_helpers import masked_reference
from torch import nn

from bitfx import zoo
from bitfx.errors import PassConfigError, PassError
from bitfx.ir import capture, compare_outputs, run_eval, total_cost
from bitfx.passes import LayerSelection, Pipeline, RankPrune, create_pass
from bitfx.passes.prune.feature_rank import average_feature_ranks, channel_ranks, rank_agreement
from bitfx.zoo import random


def _batches(shape=(4, 3, 32, 32), count=2, seed=0):
    return random(shape, batches=count, seed=seed)


def _prune(gm, prune, data):
    plan = prune.plan(gm, data)
    pruned = Pipeline([prune]).run(gm, data=data).graph_module
    return plan, pruned


@pytest.mark.parametrize(
    ("name", "prune_classifier", "criterion"),
    [
        ("resnet20", False, "rank"),
        ("mobilenet_v2", False, "l1"),
        ("densenet_tiny", False, "rank"),
        ("vgg_small", True, "rank"),
        ("resnet20", True, "random"),
    ],
)
def test_physical_removal_equals_zeroing_the_weights_that_read_removed_channels(name, prune_classifier, criterion):
    model = randomize_batchnorm(getattr(zoo, name)(), seed=3)
    data = _batches()
    gm = capture(model, data[0])
    prune = RankPrune(rate=0.5, prune_classifier=prune_classifier, criterion=criterion)
    plan, pruned = _prune(gm, prune, data)

    assert plan.channels_removed > 0 and plan.after.macs < 0.7 * plan.before.macs
    assert total_cost(pruned).macs == plan.after.macs
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    expected = run_eval(masked_reference(gm, plan, prune_classifier), x)
    actual = run_eval(pruned, x)
    assert actual.shape == run_eval(gm, x).shape
    assert max(e.max_rel_error for e in compare_outputs(expected, actual)) < 1e-5
    unmasked = run_eval(gm, x)
    assert max(e.max_rel_error for e in compare_outputs(unmasked, actual)) > 1e-3  # something really was removed


def test_resnet_residual_channels_of_a_stage_are_pruned_together():
    data = _batches()
    gm = capture(zoo.resnet56(), data[0])
    plan, pruned = _prune(gm, RankPrune(rate=0.5), data)
    stage1 = next(g for g in plan.groups if g.layers[0] == "conv1")
    assert stage1.layers == ("conv1", *(f"layers.{i}.conv2" for i in range(9)))
    assert len(set(stage1.removed_by_layer.values())) == 1 and len(stage1.removed) == 8
    stage2 = next(g for g in plan.groups if "layers.9.shortcut.0" in g.layers)
    assert set(stage2.layers) == {"layers.9.shortcut.0", *(f"layers.{i}.conv2" for i in range(9, 18))}
    for i in range(9):
        assert pruned.get_submodule(f"layers.{i}.conv2").out_channels == 8
        assert pruned.get_submodule(f"layers.{i}.conv1").in_channels == 8
    assert pruned.get_submodule("fc").in_features == 64  # the classifier's inputs stay by default


def test_mobilenet_depthwise_groups_shrink_with_their_channels():
    data = _batches()
    gm = capture(zoo.mobilenet_v2(), data[0])
    _, pruned = _prune(gm, RankPrune(rate=0.5, criterion="l1"), data)
    expand, depthwise = pruned.get_submodule("features.5.block.0"), pruned.get_submodule("features.5.block.3")
    assert expand.out_channels == depthwise.in_channels == depthwise.out_channels == depthwise.groups == 72
    assert pruned.get_submodule("features.5.block.4").num_features == 72


def test_densenet_batchnorm_after_concat_loses_the_channels_at_their_offsets():
    data = _batches()
    gm = capture(randomize_batchnorm(zoo.densenet_tiny()), data[0])
    plan = RankPrune(rate=0.5).plan(gm, data)
    pruned = Pipeline([RankPrune(rate=0.5)]).run(gm, data=data).graph_module
    stem = plan.groups[0].removed_by_layer["features.0"]
    growth = plan.groups[2].removed_by_layer["features.1.branch.5"]
    kept_positions = [k for k in range(24) if k not in stem] + [24 + k for k in range(12) if k not in growth]
    original, smaller = gm.get_submodule("features.2.branch.0"), pruned.get_submodule("features.2.branch.0")
    assert torch.equal(smaller.running_mean, original.running_mean[kept_positions])
    assert torch.equal(smaller.weight, original.weight[kept_positions])


def test_lowest_average_rank_is_pruned_and_ties_go_by_channel_index():
    model = nn.Sequential(nn.Conv2d(1, 4, 1, bias=False), nn.ReLU(), nn.Conv2d(4, 2, 1))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([1.0, -1.0, 1.0, 2.0]).view(4, 1, 1, 1))
    x = torch.rand(2, 1, 6, 6) + 0.1  # positive: channel 1 is all zero after ReLU (rank 0)
    gm = capture(model, x)
    plan = RankPrune(rate=0.25, prune_classifier=True).plan(gm, [x])
    assert plan.groups[0].removed == (1,)
    tied = RankPrune(rate=0.5, prune_classifier=True).plan(gm, [x])
    assert tied.groups[0].removed == (0, 1)  # rank 0 first, then the lowest index among equal ranks


def test_channel_ranks_match_numpy_per_map():
    maps = torch.randn(3, 5, 6, 6)
    maps[0, 1] = 0
    maps[1, 2] = torch.outer(torch.randn(6), torch.randn(6))
    expected = [[np.linalg.matrix_rank(maps[n, c].numpy()) for c in range(5)] for n in range(3)]
    assert channel_ranks(maps).tolist() == expected
    assert channel_ranks(torch.tensor([[0.0, 2.0]])).tolist() == [[0, 1]]


def test_average_ranks_cover_all_batches_and_images():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
    data = _batches((2, 3, 8, 8), count=3)
    gm = capture(model, data[0])
    stats = average_feature_ranks(gm, ["_1"], data, max_batches=2)
    with torch.no_grad():
        expected = channel_ranks(torch.cat([model(b) for b in data[:2]])).double().mean(0)
    assert stats.images == 4 and stats.batches == 2
    torch.testing.assert_close(stats.ranks["_1"], expected)


def test_rates_per_layer_round_to_and_the_caller_model_is_untouched():
    data = _batches()
    model = zoo.resnet20()
    gm = capture(model, data[0])
    before = state_snapshot(gm)
    rates = LayerSelection(
        by_name={"layers.4.conv1": 0.0, "layers.3.conv2": 0.25}, by_regex={r"layers\.[78]\.conv1": 0.75}
    )
    plan = RankPrune(rate=0.5, rates=rates, round_to=8).plan(gm, data)
    by_lead = {g.layers[0]: g for g in plan.groups}
    assert by_lead["layers.4.conv1"].removed == () and by_lead["layers.4.conv1"].rule == "name 'layers.4.conv1'"
    assert len(by_lead["layers.3.conv2"].removed) == 8  # the whole stage-2 residual group at 0.25 of 32
    assert len(by_lead["layers.7.conv1"].removed) == 48 and len(by_lead["layers.6.conv1"].removed) == 32
    assert all((g.channels - len(g.removed)) % 8 == 0 for g in plan.groups if g.removed)
    assert_same_state(gm, before)


def test_l1_and_random_criteria_need_no_data_and_choose_differently():
    data = _batches()
    gm = capture(zoo.resnet20(), data[0])
    l1 = RankPrune(rate=0.5, criterion="l1").plan(gm)
    rand = RankPrune(rate=0.5, criterion="random", seed=1).plan(gm)
    conv = gm.get_submodule("layers.0.conv1").weight.detach()
    norms = conv.abs().flatten(1).mean(1)
    assert set(l1.groups[1].removed) == set(norms.argsort()[:8].tolist())
    assert l1.after.macs == rand.after.macs and l1.groups[1].removed != rand.groups[1].removed
    assert RankPrune(rate=0.5, criterion="random", seed=1).plan(gm).groups == rand.groups


def test_no_data_is_a_clear_error_naming_both_ways_to_give_it():
    gm = capture(zoo.resnet20(), torch.randn(1, 3, 32, 32))
    with pytest.raises(PassError, match=r"--data package.module:function.*data=batches"):
        Pipeline([RankPrune()]).run(gm)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"rate": 1.0}, r"rate is 1.0; a prune rate is a number in \[0, 1\)"),
        ({"round_to": 0}, "round_to"),
        ({"criterion": "taylor"}, "'rank', 'l1', 'random'"),
    ],
)
def test_bad_parameters_are_rejected(params, message):
    with pytest.raises(PassConfigError, match=message):
        create_pass("rank_prune", params)


def test_bad_rate_in_the_selection_and_unknown_layer_names_are_rejected():
    data = _batches()
    gm = capture(zoo.resnet20(), data[0])
    with pytest.raises(PassError, match=r"rate for 'layers.0.conv1' \(name 'layers.0.conv1'\) is 2"):
        Pipeline([RankPrune(rates=LayerSelection(by_name={"layers.0.conv1": 2}))]).run(gm, data=data)
    with pytest.raises(PassError, match="layers.0.conv9"):
        Pipeline([RankPrune(rates=LayerSelection(by_name={"layers.0.conv9": 0.1}))]).run(gm, data=data)


def test_pass_is_buildable_from_text_and_saved_pipelines(tmp_path):
    pipeline = Pipeline.from_spec(
        "fuse_bn,rank_prune(rate=0.3, rates={'by_name': {'conv1': 0.0}}, round_to=4, criterion=l1)"
    )
    pipeline.save(tmp_path / "p.toml")
    again = Pipeline.from_file(tmp_path / "p.toml")
    assert again.passes[1] == pipeline.passes[1]
    assert again.passes[1].rates.by_name == {"conv1": 0.0}


def test_plan_prints_groups_removed_channels_and_resulting_shapes():
    data = _batches((2, 3, 32, 32))
    gm = capture(zoo.resnet20(), data[0])
    text = str(RankPrune(rate=0.5).plan(gm, data))
    assert "calibrated on 4 images in 2 batches" in text
    assert "conv1 (+3)" in text and "input of the classifier 'fc'" in text and "reaches the model output" in text
    assert re.search(r"\nlayers\.0\.conv1 +2×16×32×32 → 2×8×32×32 +2,304 → 576 +2,359,296 → 589,824\n", text)
    assert re.search(r"\nMACs: 40,813,184 → [\d,]+ \(0\.\d+×\)$", text)


def test_hrank_rule_keeps_residual_channels_and_ranks_each_block_conv_alone():
    data = _batches()
    gm = capture(zoo.resnet20(), data[0])
    plan, pruned = _prune(gm, RankPrune(rate=0.5, residual="keep"), data)
    residual = [g for g in plan.groups if len(g.layers) > 1]
    assert len(residual) == 3 and all(not g.removed and "HRank" in g.rule for g in residual)
    inner = [g for g in plan.groups if len(g.layers) == 1 and g.layers[0].endswith("conv1")]
    assert len(inner) == 9 and all(len(g.removed) == g.channels // 2 for g in inner)
    assert pruned.get_submodule("layers.0.conv2").out_channels == 16
    assert pruned.get_submodule("layers.0.conv1").out_channels == 8
    assert create_pass("rank_prune").residual == "stage"


def test_plan_reports_how_well_the_taps_of_a_residual_group_agree():
    data = _batches()
    gm = capture(zoo.resnet20(), data[0])
    plan = RankPrune(rate=0.5).plan(gm, data)
    residual = [g for g in plan.groups if len(g.layers) > 1]
    measured = [g.tap_agreement for g in residual if g.tap_agreement is not None]
    assert measured and all(-1 <= value <= 1 for value in measured)
    assert all(g.tap_agreement is None for g in plan.groups if len(g.layers) == 1)
    assert "mean pairwise Spearman" in str(plan) and len(plan.stats()["tap_agreement"]) == len(measured)
    assert RankPrune(rate=0.5, criterion="l1").plan(gm, data).stats()["tap_agreement"] == {}


def test_rank_agreement_is_spearman_with_average_ranks_for_ties():
    assert rank_agreement([[1, 2, 3, 4], [10, 20, 30, 40]]) == pytest.approx(1)
    assert rank_agreement([[1, 2, 3, 4], [4, 3, 2, 1]]) == pytest.approx(-1)
    # ties: [1, 1, 2] ranks as [1.5, 1.5, 3]; Pearson with [1, 2, 3] is √3/2
    assert rank_agreement([[1, 1, 2], [1, 2, 3]]) == pytest.approx(np.sqrt(3) / 2)
    assert rank_agreement([[1, 2, 3]]) is None and rank_agreement([[1, 1, 1], [1, 2, 3]]) is None
    assert rank_agreement([[1, 1, 1], [1, 2, 3], [3, 2, 1]]) == pytest.approx(-1)  # the constant tap is left out
