"""fuse_bn on layers defined outside torch.nn: batch norms and convs that trace into functional calls,
subclasses kept whole, and weight-standardised convs (reported, left as they are)."""

import pytest
import torch
import torch.nn.functional as F
from helpers import randomize_batchnorm
from torch import fx, nn

from bitfx.ir import capture, compare_outputs, run_eval
from bitfx.passes import Pipeline


class BatchNormAct2d(nn.BatchNorm2d):
    """A batch norm that also applies its activation, written like the popular libraries write it."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, self.training, self.momentum, self.eps
        )
        return self.act(x)


class BatchNormAct1d(BatchNormAct2d):
    pass


class PlainConv(nn.Conv2d):
    """A conv subclass that changes nothing: it traces into torch.conv2d on its own parameters."""


class StdConv2d(nn.Conv2d):
    """A weight-standardised conv: its weight is normalised at every call."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = self.weight.reshape(1, self.out_channels, -1)
        weight = F.batch_norm(flat, None, None, training=True, momentum=0.0, eps=1e-6).reshape_as(self.weight)
        return F.conv2d(x, weight, self.bias, self.stride, self.padding)


def _fuse(model: nn.Module, x: torch.Tensor, **capture_args):
    gm = capture(model, x, **capture_args)
    result = Pipeline.from_spec("fuse_bn").run(gm)
    error = max(e.max_rel_error for e in compare_outputs(run_eval(model, x), run_eval(result.graph_module, x)))
    return result, result.records[0].stats, error


def _batch_norm_calls(gm: fx.GraphModule) -> list[fx.Node]:
    return [n for n in gm.graph.nodes if n.op == "call_function" and n.target is F.batch_norm]


@pytest.mark.parametrize("conv", [nn.Conv2d(3, 6, 3, bias=False), PlainConv(3, 6, 3), PlainConv(3, 6, 3, bias=False)])
def test_batchnorm_with_activation_folds_into_the_conv_before_it(conv: nn.Module) -> None:
    model = randomize_batchnorm(nn.Sequential(conv, BatchNormAct2d(6), nn.Conv2d(6, 4, 1)), seed=2).eval()
    result, stats, error = _fuse(model, torch.randn(2, 3, 8, 8))
    assert stats["fused"] == 1 and stats["pairs"] == ["0+1"], stats
    assert not _batch_norm_calls(result.graph_module)
    assert error <= 1e-5


def test_linear_then_functional_batchnorm_folds() -> None:
    class Head(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(5, 3)
            self.bn = BatchNormAct1d(3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.batch_norm(self.fc(x), self.bn.running_mean, self.bn.running_var, eps=1e-3)

    model = randomize_batchnorm(Head(), seed=4).eval()
    result, stats, error = _fuse(model, torch.randn(4, 5))
    assert stats["fused"] == 1 and error <= 1e-5
    assert not _batch_norm_calls(result.graph_module)


def test_a_model_captured_in_training_mode_is_told_to_capture_in_eval() -> None:
    model = randomize_batchnorm(nn.Sequential(nn.Conv2d(3, 6, 3), BatchNormAct2d(6)))
    gm = capture(model.train(), torch.randn(2, 3, 8, 8))
    stats = Pipeline.from_spec("fuse_bn").run(gm).records[0].stats
    assert stats["fused"] == 0
    assert "training=True" in stats["skipped"]["1"] and "eval()" in stats["skipped"]["1"]


def test_weight_standardised_conv_is_reported_and_left_as_it_is() -> None:
    model = randomize_batchnorm(nn.Sequential(StdConv2d(3, 6, 3), BatchNormAct2d(6), StdConv2d(6, 4, 1)), seed=5)
    result, stats, error = _fuse(model.eval(), torch.randn(2, 3, 8, 8))
    assert stats["fused"] == 0 and error == 0.0
    assert "weight-standardised" in stats["skipped"]["0"] and "weight-standardised" in stats["skipped"]["2"]
    assert "reshape → batch_norm → reshape_as" in stats["skipped"]["0"]
    assert "weight standardisation" in stats["skipped"]["1"]


def test_subclasses_kept_whole_fold_when_they_compute_like_torch_nn() -> None:
    model = randomize_batchnorm(nn.Sequential(PlainConv(3, 6, 3), nn.BatchNorm2d(6), BatchNormAct2d(6)), seed=6)
    x = torch.randn(2, 3, 8, 8)
    result, stats, error = _fuse(model.eval(), x, leaf_modules=[PlainConv, BatchNormAct2d])
    assert stats["pairs"] == ["0+1"] and error <= 1e-5
    assert "overrides forward" in stats["skipped"]["2"]


def test_parameters_read_elsewhere_are_not_folded() -> None:
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = PlainConv(4, 4, 1)
            self.bn = BatchNormAct2d(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.bn(self.conv(x)) + self.conv.weight.sum()

    model = randomize_batchnorm(Tied(), seed=7).eval()
    _, stats, error = _fuse(model, torch.randn(2, 4, 5, 5))
    assert stats["fused"] == 0 and "read by other nodes" in stats["skipped"]["bn"]
    assert error == 0.0
