"""The preserved-outputs check is judged against the graph's own float32 noise and cannot be
fooled by NaN/Inf: a correct BatchNorm fold of a deep network passes, a slightly wrong one fails."""

from dataclasses import dataclass

import pytest
import torch
from torch import fx, nn

from bitfx.errors import PassError
from bitfx.ir import capture, compare_outputs
from bitfx.passes import Pipeline
from bitfx.passes.core.base import Pass, PassContext, PassResult
from bitfx.passes.fuse_bn import FuseBN


def _deep_cnn() -> tuple[nn.Module, fx.GraphModule]:
    """50 conv-BN-ReLU layers whose BN statistics come from data (as after training): the
    float32 rounding of the unfolded model alone is above 1e-5 on its example inputs."""
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for index in range(50):
        layers += [nn.Conv2d(3 if index == 0 else 16, 16, 3, padding=1), nn.BatchNorm2d(16, momentum=None), nn.ReLU()]
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    with torch.no_grad():
        model.train()(torch.randn(32, 3, 8, 8, generator=torch.Generator().manual_seed(100)))
    x = torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    return model.eval(), capture(model, x)


@dataclass
class WrongFold(FuseBN):
    """A BatchNorm fold with a 1e-3 relative error in one output channel of one layer."""

    name = "wrong_fold"

    def run(self, gm: fx.GraphModule, context: PassContext) -> PassResult:
        result = super().run(gm, context)
        with torch.no_grad():
            result.graph_module.get_submodule("30").weight[3] *= 1 + 1e-3
        return result


@dataclass
class NaNOutputs(Pass):
    """Claims to preserve outputs and turns them into NaN."""

    name = "nan_outputs"
    preserves_outputs = True

    def run(self, gm: fx.GraphModule, context: PassContext) -> PassResult:
        output = next(n for n in gm.graph.nodes if n.op == "output")
        with gm.graph.inserting_before(output):
            nan = gm.graph.call_function(torch.mul, (output.args[0], float("nan")))
        output.args = (nan,)
        gm.recompile()
        return PassResult(gm, True)


@pytest.mark.slow
def test_a_correct_fold_of_a_deep_network_passes_although_float32_rounding_exceeds_the_old_fixed_tolerance():
    model, gm = _deep_cnn()
    x = gm.meta["bitfx_example_inputs"][0]
    result = Pipeline([FuseBN()]).run(gm)
    with torch.no_grad():
        plain = max(e.max_rel_error for e in compare_outputs(model(x), result.graph_module(x)))
    assert plain > 1e-5  # what the fixed float32 check compared: a false failure
    record = result.records[0]
    assert record.stats["fused"] == 50
    assert record.noise_floor > 1e-6 and record.max_rel_error <= 1e-5 + 4 * record.noise_floor
    assert record.to_json()["noise_floor"] == record.noise_floor
    assert "noise floor" in str(result)


@pytest.mark.slow
def test_a_fold_wrong_by_one_part_in_a_thousand_in_one_channel_still_fails():
    _, gm = _deep_cnn()
    with pytest.raises(PassError, match="'wrong_fold'.*outputs changed: max relative error .* float32 noise floor"):
        Pipeline([WrongFold()]).run(gm)


def test_a_pass_that_turns_outputs_into_nan_fails_the_check():
    gm = capture(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).eval(), torch.randn(1, 3, 8, 8))
    with pytest.raises(PassError, match="'nan_outputs'.*max relative error inf"):
        Pipeline([NaNOutputs()], rtol=1e9).run(gm)


def test_nan_or_inf_where_the_reference_has_none_is_an_infinite_error():
    reference = torch.tensor([1.0, float("nan"), float("inf")])
    assert compare_outputs(reference, reference.clone())[0].max_rel_error == 0.0
    for broken in ([float("nan"), float("nan"), float("inf")], [1.0, 2.0, float("inf")], [1.0, float("nan"), 3.0]):
        assert compare_outputs(reference, torch.tensor(broken))[0].max_rel_error == float("inf")
