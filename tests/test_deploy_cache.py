"""Binary layers keep their deployed form between eval-mode forwards, and never use a stale one."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from bitfx.ir.binary import BinaryConv2d, BinaryLayer, BinaryLinear, NoScale, WeightBinarizer, get_scheme
from bitfx.ir.binary.estimators import ClippedSTE
from bitfx.ir.binary.rbnn import RotatedBinaryConv2d, RotatedWeightBinarizer
from bitfx.ir.binary.rotation import factor_pair, random_orthogonal

PRESETS = ("bnn", "xnor", "bireal", "reactnet", "irnet", "dorefa_w1")


def _layer(scheme: str = "reactnet", channels: int = 6) -> BinaryConv2d:
    torch.manual_seed(0)
    conv = nn.Conv2d(channels, 5, 3, padding=1)
    chosen = get_scheme(scheme)
    layer = BinaryConv2d.from_conv(conv, chosen.weight_quantizer(conv.weight), chosen.input_quantizer(channels))
    if hasattr(layer.input_quantizer, "beta"):
        with torch.no_grad():
            layer.input_quantizer.beta.uniform_(-0.3, 0.3)
    return layer.eval()


def _count_builds(layer: BinaryLayer, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A list that grows by one every time `layer` builds its deployed form."""
    builds: list[int] = []
    build = layer.deployed

    def counting():
        builds.append(1)
        return build()

    monkeypatch.setattr(layer, "deployed", counting)
    return builds


def _fresh(layer: BinaryLayer, x: torch.Tensor) -> torch.Tensor:
    """The output of a newly built deployed form: what an uncached forward computes."""
    with torch.no_grad():
        return type(layer).deployed(layer)(x)


@pytest.mark.parametrize("scheme", PRESETS)
def test_cached_output_is_identical_to_uncached(scheme: str) -> None:
    layer, x = _layer(scheme), torch.randn(2, 6, 7, 7)
    with torch.no_grad():
        first, second = layer(x), layer(x)
        uncached = layer.train()(x)
    assert torch.equal(first, second) and torch.equal(first, _fresh(layer, x)) and torch.equal(first, uncached)


def test_eval_forwards_reuse_one_build_and_training_mode_never_caches(monkeypatch: pytest.MonkeyPatch) -> None:
    layer, x = _layer(), torch.randn(2, 6, 7, 7)
    builds = _count_builds(layer, monkeypatch)
    with torch.no_grad():
        for _ in range(3):
            layer(x)
        assert len(builds) == 1
        layer.train()
        for _ in range(2):
            layer(x)
        assert len(builds) == 3
        layer.eval()
        layer(x)
        assert len(builds) == 4


def test_in_place_weight_edit_under_no_grad_rebuilds(monkeypatch: pytest.MonkeyPatch) -> None:
    layer, x = _layer(), torch.randn(2, 6, 7, 7)
    builds = _count_builds(layer, monkeypatch)
    with torch.no_grad():
        before = layer(x)
        layer.weight.neg_()
        after = layer(x)
        layer.input_quantizer.beta.add_(0.5)
        shifted = layer(x)
    assert len(builds) == 3
    assert not torch.equal(before, after) and not torch.equal(after, shifted)
    assert torch.equal(shifted, _fresh(layer, x))


def test_replacing_tensors_or_submodules_rebuilds() -> None:
    layer, x = _layer("xnor"), torch.randn(2, 6, 7, 7)
    with torch.no_grad():
        layer(x)
        layer.weight.data = -layer.weight.data
        torch.testing.assert_close(layer(x), _fresh(layer, x), rtol=0, atol=0)
        layer.bias = nn.Parameter(layer.bias + 1)
        assert torch.equal(layer(x), _fresh(layer, x))
        layer.weight_quantizer = WeightBinarizer(NoScale(), ClippedSTE())
        assert torch.equal(layer(x), _fresh(layer, x))
        layer.pad_value = 1
        assert torch.equal(layer(x), _fresh(layer, x))


def test_load_state_dict_invalidates(monkeypatch: pytest.MonkeyPatch) -> None:
    layer, other, x = _layer(), _layer(), torch.randn(2, 6, 7, 7)
    with torch.no_grad():
        other.weight.uniform_(-1, 1)
        other.input_quantizer.beta.zero_()
        layer(x)
    builds = _count_builds(layer, monkeypatch)
    layer.load_state_dict(other.state_dict())
    with torch.no_grad():
        assert torch.equal(layer(x), other(x))
    assert len(builds) == 1


def test_train_then_eval_gives_values_after_the_optimizer_step() -> None:
    layer, x = _layer("xnor"), torch.randn(2, 6, 7, 7)
    with torch.no_grad():
        before = layer(x)
    layer.train()
    optimizer = torch.optim.SGD(layer.parameters(), lr=10.0)
    layer(x).square().sum().backward()
    optimizer.step()
    layer.eval()
    with torch.no_grad():
        after = layer(x)
    assert not torch.equal(before, after) and torch.equal(after, _fresh(layer, x))


def test_dtype_moves_and_copies_start_empty() -> None:
    layer, x = _layer(), torch.randn(2, 6, 7, 7)
    with torch.no_grad():
        layer(x)
        copied = copy.deepcopy(layer)
        assert copied._deployed_cache._form is None
        assert torch.equal(copied(x), layer(x))
        layer.double()
        out = layer(x.double())
    assert out.dtype == torch.float64 and torch.equal(out, _fresh(layer, x.double()))


def test_gradients_in_eval_mode_bypass_the_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    layer, x = _layer(), torch.randn(2, 6, 7, 7)
    with torch.no_grad():
        cached = layer(x)
    builds = _count_builds(layer, monkeypatch)
    out = layer(x)
    out.sum().backward()
    assert not builds and out.requires_grad and layer.weight.grad.abs().sum() > 0
    torch.testing.assert_close(out.detach(), cached, rtol=1e-5, atol=1e-5)


def test_rotation_update_in_eval_mode_rebuilds() -> None:
    torch.manual_seed(0)
    base = _layer("bireal")
    a, b = factor_pair(base.weight[0].numel())
    generator = torch.Generator().manual_seed(1)
    quantizer = RotatedWeightBinarizer(base.weight, random_orthogonal(a, generator), random_orthogonal(b, generator))
    layer = RotatedBinaryConv2d.from_binary_conv(base, quantizer, base.input_quantizer).eval()
    x = torch.randn(2, 6, 7, 7)
    with torch.no_grad():
        layer(x)
    layer.on_epoch_start(0, 3)
    with torch.no_grad():
        assert torch.equal(layer(x), _fresh(layer, x))


def test_binary_linear_caches_too(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    linear = nn.Linear(40, 3)
    chosen = get_scheme("bireal")
    layer = BinaryLinear.from_linear(linear, chosen.weight_quantizer(linear.weight), chosen.input_quantizer(40)).eval()
    builds = _count_builds(layer, monkeypatch)
    x = torch.randn(4, 40)
    with torch.no_grad():
        outputs = [layer(x) for _ in range(3)]
    assert len(builds) == 1 and all(torch.equal(out, _fresh(layer, x)) for out in outputs)
