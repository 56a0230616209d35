"""The `iff` pass: feature filtering by the head's own outputs, run through the same head twice."""

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bitfx.backends.onnx import export, op_counts, run_session, session
from bitfx.errors import PassConfigError
from bitfx.ir import capture, run_eval
from bitfx.passes import Pipeline

SPEC = "iff(features=stem_1, outputs=cls+reg{extra})"


class TinyHead(nn.Module):
    """A one-level detector: stem → features; class tower + class conv, and a box conv, on the features."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU())
        self.cls_tower = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.cls = nn.Conv2d(8, 2, 3, padding=1)
        self.reg = nn.Conv2d(8, 4, 3, padding=1)

    def head(self, f):
        return self.cls(self.cls_tower(f)), self.reg(f)

    def forward(self, x):
        return self.head(self.stem(x))


def _run(spec, model=None, x=None):
    model = (model or TinyHead()).eval()
    x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(1)) if x is None else x
    gm = capture(model, x)
    return model, x, Pipeline.from_spec(spec).run(gm)


def _calls(gm):
    return [n.target for n in gm.graph.nodes if n.op == "call_module"]


def test_zero_init_preserves_outputs_and_the_pipeline_checks_it():
    model, x, result = _run(SPEC.format(extra=""))
    record = result.records[0]
    assert record.modified and record.max_rel_error == record.noise_floor  # the float32 outputs are unchanged
    assert record.stats["back"] == "6→8 3×3" and record.stats["head_nodes"] == 4
    assert _calls(result.graph_module).count("cls") == 2 and _calls(result.graph_module).count("reg") == 2
    for got, want in zip(run_eval(result.graph_module, x), model(x)):
        assert torch.equal(got, want)


ACTIVATIONS = [("leaky_relu", F.leaky_relu), ("sigmoid", torch.sigmoid), ("relu", torch.relu)]


@pytest.mark.parametrize("activation,act", ACTIVATIONS)
def test_normal_init_computes_the_feedback_formula(activation, act):
    model, x, result = _run(SPEC.format(extra=f", init=normal, activation={activation}, kernel_size=1"))
    gm = result.graph_module
    back = gm.iff_back_stem_1
    assert back.kernel_size == (1, 1) and 0.005 < back.weight.std().item() < 0.02 and torch.all(back.bias == 0)
    with torch.no_grad():
        f = model.stem(x)
        y = model.head(f)
        want = model.head(f + back(act(torch.cat(y, 1))))
        got = gm(x)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=0, atol=0)
    assert not torch.equal(got[0], model(x)[0])
    assert result.records[0].max_rel_error is None  # not output-preserving, so not checked


def test_lowers_to_standard_onnx_and_runs_in_onnxruntime(tmp_path):
    _, x, result = _run(SPEC.format(extra=", init=normal"))
    path = export(result.graph_module, (x,), tmp_path / "iff.onnx", lowering="float")
    counts = op_counts(onnx.load(str(path)))
    assert counts["Conv"] == 1 + 2 * 3 + 1 and counts["Concat"] == 1 and counts["LeakyRelu"] == 1 and counts["Add"] == 1
    got = run_session(session(path), [x.numpy()])
    with torch.no_grad():
        want = result.graph_module(x)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w.numpy(), rtol=1e-4, atol=1e-5)


class ReadsInput(TinyHead):
    def forward(self, x):
        f = self.stem(x)
        return self.cls(self.cls_tower(f) + x), self.reg(f)


class Pooled(TinyHead):
    def forward(self, x):
        f = self.stem(x)
        return F.avg_pool2d(self.cls(self.cls_tower(f)), 2), self.reg(f)


@pytest.mark.parametrize(
    "model,reason",
    [
        (ReadsInput(), "also reads x"),
        (Pooled(), "has shape (2, 2, 8, 8)"),
    ],
)
def test_unsuitable_heads_are_left_unchanged_with_a_reason(model, reason):
    outputs = "avg_pool2d+reg" if isinstance(model, Pooled) else "cls+reg"
    _, _, result = _run(f"iff(features=stem_1, outputs={outputs})", model)
    record = result.records[0]
    assert not record.modified and reason in record.stats["skipped"]["stem_1"]
    assert "iff_back_stem_1" not in dict(result.graph_module.named_modules())


def test_unknown_nodes_and_bad_options_are_reported():
    _, _, result = _run("iff(features=nope, outputs=cls)")
    assert "no node named nope" in result.records[0].stats["skipped"]["nope"]
    with pytest.raises(PassConfigError, match="odd"):
        Pipeline.from_spec("iff(features=stem_1, outputs=cls, kernel_size=2)")
    with pytest.raises(PassConfigError, match="needs features"):
        Pipeline.from_spec("iff(outputs=cls)")


def test_composition_binarize_before_iff_and_shared_heads_after():
    # binarize first: the binarized head is what runs twice (its ReLU node is folded away, so the
    # features are now the stem conv's output)
    _, x, before = _run("binarize,iff(features=stem_0, outputs=cls+reg)")
    assert before.records[1].modified and before.records[1].max_rel_error == before.records[1].noise_floor
    assert _calls(before.graph_module).count("cls") == 2
    # iff first: binarize and rank_prune leave the now-shared head modules float and say why
    _, _, after = _run(SPEC.format(extra="") + ",binarize")
    kept = after.records[1].stats["skipped"]
    assert kept["cls"] == kept["reg"] == kept["cls_tower.0"] == "called from 2 places"
    _, x, pruned = _run(SPEC.format(extra=""))
    result = Pipeline.from_spec("rank_prune(rate=0.5)").run(pruned.graph_module, (x,), data=[(x,)])
    reasons = " ".join(result.records[0].stats["group_plans"][0]["kept_because"])
    assert "'cls_tower.0' is called from 2 places" in reasons
