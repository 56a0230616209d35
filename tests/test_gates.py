"""Channel gates (`insert_gates`, `bitfx.ir.gate`): one shared gate per pruning group, placed after the
BatchNorm of each producing layer, outputs unchanged at 1, and folded away by every lowering."""

from __future__ import annotations

import copy

import onnx
import pytest
import torch
from torch import fx, nn

from bitfx import zoo
from bitfx.backends.onnx import export, verifier_for
from bitfx.cli import main
from bitfx.errors import LoweringError
from bitfx.ir import capture, total_cost
from bitfx.ir.gate import ChannelGate, fold_gates, gate_nodes
from bitfx.passes import Pipeline, RankPrune
from bitfx.passes.prune import analyze_channels
from examples.coverage import input_shapes, random_inputs


def _gated(model: nn.Module, inputs: tuple[torch.Tensor, ...], spec: str = "insert_gates") -> fx.GraphModule:
    return Pipeline.from_spec(spec).run(capture(model.eval(), inputs)).graph_module


def _randomise_gates(gm: fx.GraphModule, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for gate in {id(m.gate): m.gate for m in gm.modules() if isinstance(m, ChannelGate)}.values():
            gate.copy_(torch.rand(gate.shape, generator=generator) * 2 - 0.5)


def test_residual_channels_share_one_gate_across_their_stage_placed_after_the_batchnorm() -> None:
    x = torch.randn(1, 3, 8, 8)
    gm = _gated(zoo.resnet20(), (x,))
    nodes = {n.target: n for n in gate_nodes(gm)}
    stage1 = [gm.get_submodule(t).gate for t, n in nodes.items() if n.args[0].target in ("bn1", "layers.0.bn2")]
    assert len(stage1) == 2 and stage1[0] is stage1[1]
    inner = gm.get_submodule(next(t for t, n in nodes.items() if n.args[0].target == "layers.0.bn1")).gate
    assert inner is not stage1[0] and inner.shape == (16,)
    assert all(isinstance(gm.get_submodule(n.args[0].target), nn.BatchNorm2d) for n in nodes.values())


def test_gates_start_at_one_and_the_outputs_do_not_change() -> None:
    torch.manual_seed(0)
    model, x = zoo.resnet20().eval(), torch.randn(1, 3, 8, 8)
    gm = _gated(model, (x,))
    with torch.no_grad():
        assert torch.equal(gm(x), model(x))
    assert all(torch.equal(m.gate, torch.ones_like(m.gate)) for m in gm.modules() if isinstance(m, ChannelGate))


def test_after_fuse_bn_the_gate_follows_the_conv_and_the_classifier_is_skipped_with_a_reason() -> None:
    result = Pipeline.from_spec("fuse_bn,insert_gates").run(capture(zoo.resnet20().eval(), torch.randn(1, 3, 8, 8)))
    gm, stats = result.graph_module, result.records[-1].stats
    assert all(isinstance(gm.get_submodule(n.args[0].target), nn.Conv2d) for n in gate_nodes(gm))
    assert "classifier" in stats["skipped"]["layers.8.conv2"]
    assert stats["gated"] == len(gate_nodes(gm)) > 0


@pytest.mark.parametrize("family", zoo.PATTERNS)
def test_folding_random_gates_computes_what_the_gated_graph_computes(family: str) -> None:
    model = getattr(zoo, family)().eval()
    inputs = random_inputs(input_shapes(model), 2, 0)
    result = Pipeline.from_spec("insert_gates").run(capture(model, inputs))
    gm = result.graph_module
    skipped = result.records[-1].stats["skipped"]
    assert all(isinstance(reason, str) and reason for reason in skipped.values())
    if not gate_nodes(gm):
        assert skipped, f"{family}: no gate and no reason"
        return
    _randomise_gates(gm)
    folded = fold_gates(gm)
    assert not gate_nodes(folded) and gate_nodes(gm)
    with torch.no_grad():
        expected, actual = gm(*inputs), folded(*inputs)
    assert (expected - actual).abs().max() <= 1e-4 * expected.abs().max()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("spec", "lowering"),
    [
        ("insert_gates", "float"),
        ("fuse_bn,insert_gates", "int8"),
        ("insert_gates,binarize", "custom"),
        ("insert_gates,binarize", "integer"),
        ("insert_gates,pams(float_ends=false)", "qdq"),
    ],
)
def test_every_lowering_folds_the_gates_and_verifies(tmp_path, spec: str, lowering: str) -> None:
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    gm = _gated(zoo.resnet_basic(), (x,), spec)
    _randomise_gates(gm)
    path = export(gm, (x,), tmp_path / "m.onnx", lowering=lowering)
    model = onnx.load(path)
    ungated_spec = ",".join(name for name in spec.split(",") if name != "insert_gates")
    ungated = capture(zoo.resnet_basic().eval(), (x,))
    if ungated_spec:
        ungated = Pipeline.from_spec(ungated_spec).run(ungated).graph_module
    reference = onnx.load(export(ungated, (x,), tmp_path / "ungated.onnx", lowering=lowering))
    assert [n.op_type for n in model.graph.node] == [n.op_type for n in reference.graph.node]  # no op left for a gate
    assert not [n for n in model.graph.node if "gate" in n.name.lower()]
    assert not [i for i in model.graph.initializer if "gate" in i.name.lower()]
    assert verifier_for(lowering)(path, gm, (x,)).ok


def test_a_gate_that_cannot_fold_is_a_lowering_error_naming_it() -> None:
    gm = capture(nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU()).eval(), torch.randn(1, 3, 4, 4))
    relu = next(n for n in gm.graph.nodes if n.target == "1")
    gm.add_submodule("late_gate", ChannelGate(4))
    with gm.graph.inserting_after(relu):
        gate = gm.graph.call_module("late_gate", (relu,))
    relu.replace_all_uses_with(gate)
    gate.update_arg(0, relu)
    gm.recompile()
    with pytest.raises(LoweringError, match="late_gate"):
        fold_gates(gm)


def test_gate_criterion_removes_the_smallest_gates_and_the_pruned_model_lowers_and_verifies(tmp_path) -> None:
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    gm = _gated(zoo.resnet20(), (x,), "fuse_bn,insert_gates")
    _randomise_gates(gm, seed=3)
    reference = copy.deepcopy(gm)
    result = Pipeline([RankPrune(rate=0.5, criterion="gate")]).run(gm, example_inputs=(x,))
    pruned, stats = result.graph_module, result.records[-1].stats
    assert stats["channels_removed"] > 0
    analysis = analyze_channels(reference)
    removed = set()
    for group, plan in zip(analysis.groups, stats["group_plans"]):
        removed |= {group.channels[p] for p in plan["removed"]}
    with torch.no_grad():
        for node in gate_nodes(reference):
            gate = reference.get_submodule(node.target).gate
            slots = [analysis.channel_of(s) for s in analysis.maps[node.name]]
            gone = [k for k, c in enumerate(slots) if c in removed]
            kept = [k for k, c in enumerate(slots) if c not in removed]
            if gone and kept:
                assert gate.abs()[gone].max() <= gate.abs()[kept].min()
            gate[gone] = 0
        assert torch.allclose(pruned(x), reference(x), atol=1e-5)
    gates = [m.gate for m in pruned.modules() if isinstance(m, ChannelGate)]
    assert len({id(g) for g in gates}) < len(gates) and all(g.numel() <= 64 for g in gates)
    path = export(pruned, (x,), tmp_path / "pruned.onnx")
    assert not [n for n in onnx.load(path).graph.node if n.op_type == "Mul"]
    assert verifier_for("float")(path, pruned, (x,)).ok


def test_gate_criterion_without_gates_keeps_every_channel_and_says_why() -> None:
    x = torch.randn(2, 3, 8, 8)
    result = Pipeline([RankPrune(rate=0.5, criterion="gate")]).run(capture(zoo.resnet20().eval(), x))
    stats = result.records[-1].stats
    assert stats["channels_removed"] == 0
    assert "run insert_gates first" in stats["skipped"]["layers.0.conv1"]


def test_a_shared_gate_counts_once_in_the_parameter_count() -> None:
    x = torch.randn(1, 3, 8, 8)
    gm = _gated(zoo.resnet20(), (x,))
    unique = sum(p.numel() for p in gm.parameters())
    assert total_cost(gm).params == unique < sum(p.numel() for _, p in gm.named_parameters(remove_duplicate=False))


@pytest.mark.slow
@pytest.mark.parametrize("passes", ["fuse_bn,insert_gates", "insert_gates"])
def test_cli_compiles_and_verifies_resnet56_with_gates(tmp_path, capsys, passes: str) -> None:
    path = tmp_path / "m.onnx"
    assert main(["compile", "bitfx.zoo:resnet56", "--passes", passes, "-o", str(path)]) == 0
    assert "ChannelGate×47" in capsys.readouterr().out
    assert {n.op_type for n in onnx.load(path).graph.node} == {"Conv", "Relu", "Add", "ReduceMean", "Reshape", "Gemm"}
