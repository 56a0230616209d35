"""The pattern families of `bitfx.zoo.PATTERNS` and the coverage matrix (`examples.coverage`):
every family captures and passes signal, the matrix's detectors of silent problems catch
constructed bad cases, and the matrix runs end to end on a few families. Whether each cell is ✓
is what the matrix reports (docs/coverage.md), not asserted here."""

import pytest
import torch
from torch import nn

from bitfx import zoo
from bitfx.ir import capture
from bitfx.passes import Pipeline
from examples.coverage import NOT_RUN, OK, STAGES, input_shapes, markdown, random_inputs, run_matrix, short, totals
from examples.coverage_checks import non_negative_binary_inputs, noop_reason, output_independent, unreported


@pytest.mark.parametrize("family", zoo.PATTERNS)
def test_family_captures_and_passes_signal(family: str) -> None:
    model = getattr(zoo, family)().eval()
    shapes = input_shapes(model)
    inputs, other = random_inputs(shapes, 2, 0), random_inputs(shapes, 2, 1)
    gm = capture(model, inputs)
    with torch.no_grad():
        expected = model(*inputs)
        assert torch.equal(gm(*inputs), expected)
        assert (gm(*other) - expected).abs().max() > 1e-3 * expected.abs().max()
    assert torch.isfinite(expected).all() and expected.std() > 1e-3
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            assert not torch.allclose(module.running_var, torch.ones_like(module.running_var))


def test_patterns_are_many_distinct_families_exported_from_the_zoo() -> None:
    assert len(set(zoo.PATTERNS)) == len(zoo.PATTERNS) >= 20
    assert not set(zoo.PATTERNS) & set(zoo.MODELS)
    assert set(zoo.PATTERNS) <= set(zoo.__all__)


class _ReluThenConvs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv3 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3(self.conv2(self.relu(self.conv1(x))))
        return self.fc(x.mean((2, 3)))


def test_detector_catches_a_binary_layer_fed_by_a_relu() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8)
    gm = capture(_ReluThenConvs().eval(), x)
    replaced = Pipeline.from_spec("binarize").run(gm).graph_module
    assert non_negative_binary_inputs(replaced, [(x,), (torch.randn(2, 3, 8, 8),)]) is None
    # binarize refuses this itself now, so the bad case is made by hand: a ReLU in front of conv2
    conv2 = next(node for node in replaced.graph.nodes if node.op == "call_module" and node.target == "conv2")
    with replaced.graph.inserting_before(conv2):
        rectified = replaced.graph.call_function(torch.relu, (conv2.args[0],))
    conv2.replace_input_with(conv2.args[0], rectified)
    replaced.recompile()
    assert non_negative_binary_inputs(replaced, [(x,), (torch.randn(2, 3, 8, 8),)]) == (
        "WRONG: binary layer conv2 sees only non-negative input"
    )


class _Constant(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.randn(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.flatten(1)[:, :4] > 100).float() + self.bias


def test_detector_catches_an_output_independent_of_the_input() -> None:
    a, b = (torch.randn(2, 3, 4, 4),), (torch.randn(2, 3, 4, 4),)
    assert output_independent(_Constant(), a, b) == "WRONG: output independent of input"
    assert output_independent(nn.Conv2d(3, 2, 1), a, b) is None


def test_detectors_of_passes_that_said_nothing() -> None:
    assert noop_reason(0, 3, "BatchNorms folded", {}) == "no-op: 0 of 3 BatchNorms folded, no reason given"
    assert noop_reason(0, 3, "BatchNorms folded", {"bn": "shared"}) == "no-op: 0 of 3 BatchNorms folded; bn: shared"
    assert noop_reason(0, 0, "BatchNorms folded", {}) is None and noop_reason(2, 3, "x", {}) is None
    assert unreported(1, {"a": "why"}, 4, "layers binarized").startswith("silent: 2 of 4 candidates")
    assert unreported(1, {"a": "why"}, 2, "layers binarized") is None


def test_reasons_fit_one_cell() -> None:
    error = ValueError("first line | with a pipe\nsecond line " + "x" * 300)
    assert short(error).startswith("ValueError: first line / with a pipe second line xxx")
    assert len(short(error)) <= 110 and "\n" not in short(error)
    assert short(ValueError("no codes in '/tmp/tmpab12/m_qdq.onnx'")) == "ValueError: no codes in 'm_qdq.onnx'"


@pytest.mark.slow
def test_matrix_runs_a_few_families(tmp_path) -> None:
    families = ["resnet_basic", "bn_act_net", "two_input_net"]
    results = run_matrix(families, STAGES)
    assert [r.family for r in results] == families
    for result in results:
        assert set(result.cells) == set(STAGES)
        assert all(cell and "\n" not in cell and len(cell) <= 110 for cell in result.cells.values())
        assert result.cells["capture"] == OK
    counts = totals(results, STAGES)
    assert counts["capture"] == {"ok": 3, "ran": 3, "not_applicable": 0, "not_run": 0}
    for stage, count in counts.items():
        assert count["ok"] <= count["ran"] and count["ran"] + count["not_applicable"] + count["not_run"] == 3, stage
    text = markdown(results, STAGES, "python -m examples.coverage --families x", 1.0)
    assert "`python -m examples.coverage --families x`" in text
    assert "| family | " + " | ".join(STAGES) + " |" in text and text.count("\n| resnet_basic |") == 1
    assert all(cell in text for r in results for cell in r.cells.values() if cell not in (OK, NOT_RUN))
