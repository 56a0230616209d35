import pytest
import torch
from helpers import assert_same_state, randomize_batchnorm, state_snapshot
from torch import nn

from bitfx import zoo
from bitfx.ir import capture, compare_outputs, run_eval
from bitfx.passes import Pipeline


def _fuse(model, x):
    gm = capture(model, x)
    result = Pipeline.from_spec("fuse_bn").run(gm)
    error = max(e.max_rel_error for e in compare_outputs(run_eval(model, x), run_eval(result.graph_module, x)))
    return result, error


def _batchnorms(module):
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@pytest.mark.parametrize("name", zoo.MODELS)
def test_every_example_model_fused_equals_unfused_eval_model(name):
    model = randomize_batchnorm(getattr(zoo, name)(), seed=1)
    x = torch.randn(2, *model.example_input_shape[1:], generator=torch.Generator().manual_seed(0))
    result, error = _fuse(model, x)
    assert error <= 1e-5
    stats = result.records[0].stats
    remaining = _batchnorms(result.graph_module)
    assert len(remaining) == len(stats["skipped"])
    assert stats["fused"] + len(remaining) == len(_batchnorms(model))


def test_densenet_preactivation_batchnorms_are_skipped_with_a_reason():
    model = randomize_batchnorm(zoo.densenet_tiny())
    result, _ = _fuse(model, torch.randn(2, 3, 32, 32))
    reasons = result.records[0].stats["skipped"]
    assert reasons and all("cannot absorb" in r or "other users" in r or "not a conv" in r for r in reasons.values())
    assert result.records[0].stats["fused"] > 0  # the BN after each bottleneck 1x1 conv


@pytest.mark.parametrize(
    "layers, shape",
    [
        ((nn.Conv1d(4, 6, 3, bias=False), nn.BatchNorm1d(6)), (3, 4, 10)),
        ((nn.Conv3d(2, 5, 3, padding=1, groups=1), nn.BatchNorm3d(5)), (2, 2, 4, 4, 4)),
        ((nn.ConvTranspose2d(6, 8, 3, stride=2, groups=2), nn.BatchNorm2d(8)), (2, 6, 5, 5)),
        ((nn.ConvTranspose2d(4, 6, 2, stride=2), nn.BatchNorm2d(6, affine=False)), (2, 4, 3, 3)),
        ((nn.Linear(7, 5), nn.BatchNorm1d(5)), (4, 7)),
        ((nn.Conv2d(6, 6, 3, groups=6), nn.BatchNorm2d(6, momentum=None)), (2, 6, 7, 7)),
    ],
)
def test_each_foldable_pair(layers, shape):
    model = randomize_batchnorm(nn.Sequential(*layers), seed=3)
    result, error = _fuse(model, torch.randn(*shape))
    assert result.records[0].stats["fused"] == 1
    assert error <= 1e-5
    assert not _batchnorms(result.graph_module)


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.shared = nn.Conv2d(4, 4, 1)
        self.bn2 = nn.BatchNorm2d(4)
        self.bn3 = nn.BatchNorm2d(4)
        self.untracked = nn.Conv2d(4, 4, 1)
        self.bn4 = nn.BatchNorm2d(4, track_running_stats=False)

    def forward(self, x):
        y = self.conv(x)
        z = self.bn(y) + y  # conv output has another user
        a = self.bn2(self.shared(z))  # shared module is called twice
        b = self.bn3(self.shared(a))
        return self.bn4(self.untracked(b))


def test_unfoldable_layers_are_skipped_and_reported():
    model = randomize_batchnorm(Branchy())
    result, error = _fuse(model, torch.randn(2, 3, 8, 8))
    skipped = result.records[0].stats["skipped"]
    assert "other users" in skipped["bn"]
    assert "called from 2 places" in skipped["bn2"] and "called from 2 places" in skipped["bn3"]
    assert "track_running_stats=False" in skipped["bn4"]
    assert result.records[0].stats["fused"] == 0 and not result.records[0].modified
    assert error <= 1e-6


def test_caller_model_keeps_its_batchnorms_and_weights():
    model = randomize_batchnorm(zoo.resnet20())
    snapshot = state_snapshot(model)
    _fuse(model, torch.randn(2, 3, 32, 32))
    assert_same_state(model, snapshot)
    assert len(_batchnorms(model)) == 21
