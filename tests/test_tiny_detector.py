"""The zoo's tiny anchor-free detector: capture, box encoding, and how iff composes with binarize and rank_prune."""

import json

import numpy as np
import pytest
import torch

from bitfx.cli import main
from bitfx.eval import Detections, GroundTruth, average_precision
from bitfx.ir import capture, run_eval
from bitfx.passes import Pipeline
from bitfx.zoo import tiny_detector, tiny_objects
from bitfx.zoo.tiny_detector import decode, iff_spec, loss, targets


@pytest.fixture(scope="module")
def batch():
    return tiny_objects(count=8, batch_size=8, seed=3)[0]


def _captured(x):
    torch.manual_seed(0)
    return capture(tiny_detector().eval(), x)


def _calls(gm, target):
    return sum(1 for n in gm.graph.nodes if n.op == "call_module" and n.target == target)


def test_outputs_are_stride_4_maps_and_the_feature_node_is_named(batch):
    images = batch[0][:2]
    gm = _captured(images)
    logits, regression = gm(images)
    assert logits.shape == (2, 1, 16, 16) and regression.shape == (2, 4, 16, 16)
    assert iff_spec(gm) == "iff(features=backbone_4_2, outputs=cls+reg, activation=leaky_relu, init=zero)"


def test_perfect_outputs_decode_to_the_ground_truth_boxes(batch):
    images, truths = batch
    heat, mask, regression, centres = targets(truths, 64, 64)
    regular = sum(int((~(t.ignore | t.uncertain)).sum()) for t in truths)
    assert centres.sum() == regular and torch.all(mask[centres > 0] == 1) and (mask == 0).any()
    logits = torch.where(centres > 0, torch.tensor(10.0), torch.tensor(-10.0))
    decoded = decode(logits.numpy(), regression.numpy())
    gts = [GroundTruth(t.boxes, ignore=t.ignore, uncertain=t.uncertain) for t in truths]
    dets = [Detections(boxes, scores) for boxes, scores in decoded]
    for (boxes, scores), truth in zip(decoded, truths):
        clear = truth.boxes[~(truth.ignore | truth.uncertain)]
        top = np.round(boxes[scores > 0.5], 3)
        assert len(top) == len(clear)
        np.testing.assert_allclose(top[np.lexsort(top.T)], clear[np.lexsort(clear.T)], atol=1e-3)
    assert average_precision(gts, dets, "tiny", 0.75) == pytest.approx(1.0)
    assert loss((logits, regression), (heat, mask, regression, centres)) < 0.1
    assert loss((torch.zeros_like(logits), torch.zeros_like(regression)), (heat, mask, regression, centres)) > 1


def test_iff_with_zero_init_preserves_the_outputs(batch):
    images = batch[0][:2]
    gm = _captured(images)
    want = run_eval(gm, images)
    result = Pipeline.from_spec(iff_spec(gm)).run(gm)
    record = result.records[0]
    assert record.modified and record.max_rel_error is not None and record.max_rel_error <= record.noise_floor
    assert _calls(result.graph_module, "cls") == 2 and _calls(result.graph_module, "reg") == 2
    for got, expected in zip(run_eval(result.graph_module, images), want):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_binarize_then_iff_runs_the_binarized_head_twice(batch):
    images = batch[0][:2]
    gm = Pipeline.from_spec("binarize(layers={'by_name': {'cls': False}})").run(_captured(images)).graph_module
    assert type(gm.get_submodule("cls_tower.0")).__name__ == "BinaryConv2d"
    result = Pipeline.from_spec(iff_spec(gm)).run(gm)
    assert result.records[0].modified and result.records[0].stats["features"] == "backbone_4_1"
    assert _calls(result.graph_module, "cls_tower.0") == 2


def test_rank_prune_then_iff_runs_the_pruned_head_twice(batch):
    images = batch[0][:2]
    pruned = Pipeline.from_spec("rank_prune(rate=0.5)").run(_captured(images), (images,), data=[(images,)])
    gm = pruned.graph_module
    assert gm.get_submodule("backbone.2.0").out_channels == 16
    result = Pipeline.from_spec(iff_spec(gm)).run(gm)
    assert result.records[0].modified and result.records[0].max_rel_error <= result.records[0].noise_floor
    assert _calls(result.graph_module, "cls_tower.0") == 2


def test_iff_then_binarize_or_rank_prune_leaves_the_shared_head_and_says_why(batch):
    images = batch[0][:2]
    gm = _captured(images)
    after = Pipeline.from_spec(iff_spec(gm) + ",binarize").run(gm)
    skipped = after.records[1].stats["skipped"]
    assert skipped["cls_tower.0"] == skipped["cls"] == skipped["reg"] == "called from 2 places"
    assert type(after.graph_module.get_submodule("backbone.1.0")).__name__ == "BinaryConv2d"
    gm = _captured(images)
    shared = Pipeline.from_spec(iff_spec(gm)).run(gm).graph_module
    pruned = Pipeline.from_spec("rank_prune(rate=0.5)").run(shared, (images,), data=[(images,)])
    reasons = " ".join(" ".join(plan["kept_because"]) for plan in pruned.records[0].stats["group_plans"])
    assert "'cls_tower.0' is called from 2 places" in reasons
    assert pruned.graph_module.get_submodule("cls_tower.0").out_channels == 32


@pytest.mark.slow
def test_bitfx_compile_lowers_the_binarized_detector_with_iff(tmp_path):
    spec = "binarize(layers={'by_name': {'cls': False}}),iff(features=backbone_4_1, outputs=cls+reg)"
    args = ["compile", "bitfx.zoo:tiny_detector", "--passes", spec, "--lowering", "custom"]
    code = main([*args, "-o", str(tmp_path / "m.onnx"), "--report", str(tmp_path / "r.json")])
    report = json.loads((tmp_path / "r.json").read_text())
    assert code == 0 and report["verify"]["ok"] and len(report["verify"]["outputs"]) == 2
