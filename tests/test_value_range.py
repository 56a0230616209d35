"""The value-range analysis (`bitfx.ir.value_range`) and the `binarize` pass that relies on it: a binary layer
never reads an input that cannot be negative (its signs would all be +1)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

from bitfx.errors import PassError
from bitfx.ir import capture
from bitfx.ir.binary import BinaryConv2d, get_scheme
from bitfx.ir.value_range import never_negative
from bitfx.passes import BinarizeConvs, Pipeline


def _bn_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout))


class Probe(nn.Module):
    """stem (float, first conv) → `block` → `probe` conv (the layer under test) → head (float, last layer)."""

    def __init__(self, block: nn.Module, channels: int) -> None:
        super().__init__()
        self.stem = _bn_conv(3, 8)
        self.block = block
        self.probe = nn.Conv2d(channels, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.probe(self.block(self.stem(x))))


class ConcatOfRelus(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = _bn_conv(8, 4), _bn_conv(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([F.relu(self.a(x)), torch.relu(self.b(x))], dim=1)


class SplitOfRelu6(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left, right = torch.split(F.relu6(x), 4, dim=1)
        return torch.cat([right, left], dim=1)


class SqueezeExcite(nn.Module):
    """y = ReLU(BN(conv(x))) gated by sigmoid(fc2(ReLU(fc1(mean(y))))); the gate's convs are functional calls,
    which binarize does not rewrite, so the ReLU on y stays."""

    def __init__(self) -> None:
        super().__init__()
        self.body, self.act = _bn_conv(8, 8), nn.ReLU()
        self.fc1, self.fc2 = nn.Parameter(torch.randn(2, 8, 1, 1)), nn.Parameter(torch.randn(8, 2, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.body(x))
        gate = torch.sigmoid(F.conv2d(F.relu(F.conv2d(y.mean((2, 3), keepdim=True), self.fc1)), self.fc2))
        return y * gate


class SumOfRelus(nn.Module):
    def __init__(self, signed_second: bool = False) -> None:
        super().__init__()
        self.a, self.b = _bn_conv(8, 8), _bn_conv(8, 8)
        self.signed_second = signed_second

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        second = self.b(x) if self.signed_second else F.relu(self.b(x))
        return F.relu(self.a(x)) + second


def _binarize(model: nn.Module, spec: str = "binarize(scheme=xnor)") -> tuple[fx.GraphModule, dict]:
    torch.manual_seed(0)
    result = Pipeline.from_spec(spec).run(capture(model.eval(), torch.randn(2, 3, 8, 8)))
    return result.graph_module, result.records[-1].stats


@pytest.mark.parametrize(
    ("block", "producers"),
    [
        (ConcatOfRelus(), "relu, relu_1"),
        (SplitOfRelu6(), "relu6"),
        (SqueezeExcite(), "block_act, sigmoid"),
        (SumOfRelus(), "relu_1, relu"),
    ],
    ids=["relu-cat", "relu6-split", "se-gate", "add-of-relus"],
)
def test_a_conv_reading_a_never_negative_value_stays_float_with_the_reason(block: nn.Module, producers: str) -> None:
    gm, stats = _binarize(Probe(block, 8))
    assert not isinstance(gm.get_submodule("probe"), BinaryConv2d)
    reason = stats["skipped"]["probe"]
    assert "never negative" in reason and producers in reason, reason
    assert "probe" not in stats["layers"]


@pytest.mark.parametrize("scheme", ["xnor", "bnn", "bireal"])
def test_a_conv_with_a_signed_path_in_its_input_is_binarized(scheme: str) -> None:
    gm, stats = _binarize(Probe(SumOfRelus(signed_second=True), 8), f"binarize(scheme={scheme})")
    assert isinstance(gm.get_submodule("probe"), BinaryConv2d)
    assert stats["layers"]["probe"] == scheme


def test_a_rectifier_on_a_single_input_chain_is_still_replaced_and_the_conv_binarized() -> None:
    block = nn.Sequential(_bn_conv(8, 8), nn.ReLU(), nn.MaxPool2d(2), nn.Upsample(scale_factor=2))
    gm, stats = _binarize(Probe(block, 8))
    assert isinstance(gm.get_submodule("probe"), BinaryConv2d)
    assert "removed (feeds binary probe)" in stats["activations_replaced"].values()


def test_reactnet_sign_with_a_learned_threshold_may_read_non_negative_values() -> None:
    gm, stats = _binarize(Probe(ConcatOfRelus(), 8), "binarize(scheme=reactnet)")
    assert isinstance(gm.get_submodule("probe"), BinaryConv2d), stats["skipped"]


def test_activations_keep_leaves_the_relu_and_keeps_the_conv_after_it_float() -> None:
    block = nn.Sequential(_bn_conv(8, 8), nn.ReLU())
    gm, stats = _binarize(Probe(block, 8), "binarize(scheme=xnor, activations=keep)")
    assert "never negative" in stats["skipped"]["probe"] and stats["activations_replaced"] == {}
    gm, stats = _binarize(Probe(block, 8), "binarize(scheme=xnor)")
    assert isinstance(gm.get_submodule("probe"), BinaryConv2d)


def test_ensures_fails_on_a_binary_layer_after_a_relu() -> None:
    model = Probe(nn.Sequential(_bn_conv(8, 8), nn.ReLU()), 8).eval()
    scheme = get_scheme("xnor")
    conv = model.probe
    model.probe = BinaryConv2d.from_conv(conv, scheme.weight_quantizer(conv.weight), scheme.input_quantizer(8))
    gm = capture(model, torch.randn(1, 3, 8, 8))
    with pytest.raises(PassError, match="probe: its input is never negative"):
        BinarizeConvs().ensures(gm)


def test_the_analysis_follows_views_gates_and_scalars_and_stops_at_signed_ops() -> None:
    class Mixed(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            r = F.relu(x)
            shuffled = r.view(2, 2, 2, 4, 4).transpose(1, 2).reshape(2, 4, 4, 4)
            gated = F.interpolate(shuffled, scale_factor=2) * torch.sigmoid(x).mean()
            scaled = gated * 0.5 + 1
            negated = gated * -1.0
            shifted = gated - 1
            clamped = torch.clamp(x, min=0.0)
            return scaled, negated, shifted, clamped, torch.tanh(r), torch.tanh(x)

    gm = capture(Mixed(), torch.randn(2, 4, 4, 4))
    values = {node.name for node in never_negative(gm)}
    assert {"reshape", "interpolate", "mul", "add", "clamp", "tanh"} <= values
    assert not {"mul_2", "sub", "tanh_1"} & values
