"""The binary IR vocabulary: sign, estimators, scales, quantizers, layers, ops and presets."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bitfx.ir import capture, run_eval, summary, to_dot, write_graph_picture
from bitfx.ir.binary import (
    EDE,
    ApproxSign,
    BinaryConv2d,
    BinaryLinear,
    BinaryScheme,
    ClippedSTE,
    DeployedBinaryConv2d,
    IdentitySTE,
    LearnedScale,
    RPReLU,
    RSign,
    SignActivation,
    WeightBinarizer,
    available_schemes,
    binary_conv2d,
    binary_sign,
    get_scheme,
    make_scale,
    register_scheme,
    sign_with,
)
from bitfx.ir.deploy import deployed
from bitfx.train import after_optimizer_step, on_epoch_start

PRESETS = ("bnn", "xnor", "bireal", "reactnet", "irnet", "dorefa_w1")


def test_sign_of_zero_is_plus_one() -> None:
    x = torch.tensor([-2.0, -0.0, 0.0, 1e-30, -1e-30, 3.0])
    assert binary_sign(x).tolist() == [-1, 1, 1, 1, -1, 1]


@pytest.mark.parametrize(
    ("estimator", "points", "expected"),
    [
        (IdentitySTE(), [-3.0, 0.0, 3.0], [1.0, 1.0, 1.0]),
        (ClippedSTE(), [-1.5, -1.0, 0.0, 1.0, 1.5], [0.0, 1.0, 1.0, 1.0, 0.0]),
        (ApproxSign(), [-1.5, -1.0, -0.5, 0.0, 0.5, 1.0], [0.0, 0.0, 1.0, 2.0, 1.0, 0.0]),
    ],
)
def test_estimator_is_the_backward_of_sign(estimator, points, expected) -> None:
    x = torch.tensor(points, requires_grad=True)
    y = sign_with(x, estimator)
    assert y.tolist() == binary_sign(x.detach()).tolist()
    y.backward(torch.full_like(x, 3.0))
    assert x.grad.tolist() == pytest.approx([3.0 * e for e in expected])


def test_ede_schedule_and_derivative() -> None:
    ede = EDE()
    assert (ede.t, ede.k) == (1e-3, 1000.0)  # before the first epoch: the identity STE
    epochs = 4
    seen = [ede.on_epoch_start(epoch, epochs) for epoch in range(epochs)]
    assert [s["t"] for s in seen] == pytest.approx([1e-3, 1e-2, 1e-1, 1.0])
    assert [s["k"] for s in seen] == pytest.approx([1000.0, 100.0, 10.0, 1.0])
    x = torch.tensor([-2.0, 0.0, 0.5])
    assert ede.derivative(x).tolist() == pytest.approx((1 - torch.tanh(x) ** 2).tolist())
    ede.on_epoch_start(0, epochs)
    assert ede.derivative(x).tolist() == pytest.approx([1.0, 1.0, 1.0], abs=1e-5)


def test_scales() -> None:
    weight = torch.tensor([[0.5, -1.5], [-0.3, 0.2]]).view(2, 2, 1, 1)
    assert make_scale("none", weight)(weight).tolist() == [1.0, 1.0]
    assert make_scale("mean", weight)(weight).tolist() == pytest.approx([1.0, 0.25])
    assert make_scale("layer_mean", weight)(weight).tolist() == pytest.approx([0.625, 0.625])
    assert make_scale("pow2", weight)(weight).tolist() == [1.0, 0.25]  # 2^round(log2 1), 2^round(log2 0.25)
    learned = make_scale("learned", weight)
    assert isinstance(learned, LearnedScale) and learned.value.requires_grad
    assert learned(weight).tolist() == pytest.approx([1.0, 0.25])
    with pytest.raises(ValueError, match="pow2"):
        make_scale("bogus", weight)


def _weight_grad(quantizer: WeightBinarizer, weight: torch.Tensor, upstream: torch.Tensor) -> torch.Tensor:
    weight = weight.clone().requires_grad_(True)
    quantizer(weight).backward(upstream)
    return weight.grad


WEIGHT = torch.tensor([[0.4, -1.6, 0.2, -0.8], [1.2, 0.1, -0.3, 0.5]]).view(2, 4, 1, 1)
UPSTREAM = torch.tensor([[1.0, 2.0, -1.0, 0.5], [-2.0, 1.0, 3.0, 1.0]]).view(2, 4, 1, 1)


def test_bireal_gradient_goes_straight_to_the_latent_weight() -> None:
    quantizer = get_scheme("bireal").weight_quantizer(WEIGHT)
    assert torch.equal(quantizer(WEIGHT), WEIGHT.abs().mean(dim=(1, 2, 3), keepdim=True) * binary_sign(WEIGHT))
    assert torch.equal(_weight_grad(quantizer, WEIGHT, UPSTREAM), UPSTREAM * (WEIGHT.abs() <= 1))


def test_xnor_gradient_flows_through_the_scale() -> None:
    quantizer = get_scheme("xnor").weight_quantizer(WEIGHT)
    flat_w, flat_g = WEIGHT.flatten(1), UPSTREAM.flatten(1)
    alpha = flat_w.abs().mean(dim=1, keepdim=True)
    signs = binary_sign(flat_w)
    expected = (
        alpha * flat_g * (flat_w.abs() <= 1) + signs * (flat_g * signs).sum(dim=1, keepdim=True) / flat_w.shape[1]
    )
    torch.testing.assert_close(_weight_grad(quantizer, WEIGHT, UPSTREAM), expected.view_as(WEIGHT))


def test_dorefa_w1_is_identity_straight_through() -> None:
    quantizer = get_scheme("dorefa_w1").weight_quantizer(WEIGHT)
    assert torch.equal(_weight_grad(quantizer, WEIGHT, UPSTREAM), UPSTREAM)
    signs, scale = quantizer.deploy(WEIGHT)
    assert scale.tolist() == pytest.approx([WEIGHT.abs().mean().item()] * 2)


def test_irnet_standardises_and_uses_power_of_two_scales() -> None:
    quantizer = get_scheme("irnet").weight_quantizer(WEIGHT)
    signs, scale = quantizer.deploy(WEIGHT)
    centred = WEIGHT.flatten(1) - WEIGHT.flatten(1).mean(dim=1, keepdim=True)
    assert torch.equal(signs.flatten(1), binary_sign(centred))
    assert all(math.log2(s).is_integer() for s in scale.tolist())
    assert isinstance(quantizer.estimator, EDE)
    assert torch.isfinite(_weight_grad(quantizer, WEIGHT, UPSTREAM)).all()


def test_preset_configurations() -> None:
    assert set(PRESETS) <= set(available_schemes())
    bnn = get_scheme("bnn").weight_quantizer(WEIGHT)
    assert bnn.scale.name == "none" and bnn.clip_latent and isinstance(bnn.estimator, ClippedSTE)
    assert isinstance(get_scheme("bireal").input_quantizer(4).estimator, ApproxSign)
    reactnet = get_scheme("reactnet")
    assert isinstance(reactnet.input_quantizer(4), RSign) and isinstance(reactnet.relu_replacement(4), RPReLU)
    assert isinstance(get_scheme("irnet").input_quantizer(4).estimator, EDE)
    assert isinstance(get_scheme("xnor").input_quantizer(4), SignActivation)
    assert get_scheme("dorefa_w1").input_quantizer(4) is None  # W1A32
    for name in PRESETS:
        assert get_scheme(name).reference and get_scheme(name).pad_value == 0


def test_scheme_registry_errors() -> None:
    with pytest.raises(ValueError, match="bireal"):
        get_scheme("nope")
    clash = BinaryScheme(
        name="xnor", reference="x", scale="none", weight_estimator=IdentitySTE, activation=None, relu_replacement=None
    )
    with pytest.raises(ValueError, match="already registered"):
        register_scheme(clash)


def _conv(in_channels: int, out_channels: int, **options) -> nn.Conv2d:
    torch.manual_seed(0)
    conv = nn.Conv2d(in_channels, out_channels, 3, **options)
    with torch.no_grad():
        conv.bias.uniform_(-0.5, 0.5)
    return conv


def _reference(layer: BinaryConv2d, x: torch.Tensor) -> torch.Tensor:
    """The contract of bitfx.BinaryConv2d computed independently, in float64."""
    signs, scale, bias = layer.deploy_tensors()
    if isinstance(layer.input_quantizer, RSign):
        x = x - layer.input_quantizer.beta.detach().view(1, -1, 1, 1)
    x = x.double()
    activations = torch.where(x < 0, -1.0, 1.0).double() if layer.binarize_input else x
    height, width = layer.padding
    activations = F.pad(activations, (width, width, height, height), value=float(layer.pad_value))
    y = F.conv2d(activations, signs.double(), None, layer.stride, 0, layer.dilation, layer.groups)
    return y * scale.double().view(1, -1, 1, 1) + bias.double().view(1, -1, 1, 1)


@pytest.mark.parametrize("scheme", PRESETS)
@pytest.mark.parametrize("pad_value", [-1, 0, 1])
def test_training_path_eval_path_and_deployed_layer_agree(scheme: str, pad_value: int) -> None:
    conv = _conv(70, 6, stride=2, padding=2, dilation=2, groups=2)
    chosen = get_scheme(scheme)
    layer = BinaryConv2d.from_conv(
        conv, chosen.weight_quantizer(conv.weight), chosen.input_quantizer(70), pad_value=pad_value
    )
    if layer.input_quantizer is not None and hasattr(layer.input_quantizer, "beta"):
        with torch.no_grad():
            layer.input_quantizer.beta.uniform_(-0.3, 0.3)
    x = torch.randn(2, 70, 9, 9)
    trained = layer(x.clone().requires_grad_(True))
    with torch.no_grad():
        evaluated = layer(x)
        deployed = layer.deployed()(x)
    assert torch.equal(evaluated, deployed)
    torch.testing.assert_close(trained.detach(), evaluated, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(evaluated.double(), _reference(layer, x), rtol=1e-5, atol=1e-5)
    trained.sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0


def test_binary_linear_paths_agree_and_w1a32_keeps_real_inputs() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(130, 5)
    for scheme in ("reactnet", "dorefa_w1"):
        chosen = get_scheme(scheme)
        layer = BinaryLinear.from_linear(linear, chosen.weight_quantizer(linear.weight), chosen.input_quantizer(130))
        x = torch.randn(4, 130)
        with torch.no_grad():
            evaluated = layer(x)
        torch.testing.assert_close(layer(x.clone().requires_grad_(True)).detach(), evaluated, rtol=1e-5, atol=1e-5)
        signs, scale, bias = layer.deploy_tensors()
        inputs = binary_sign(x) if layer.binarize_input else x
        torch.testing.assert_close(evaluated, inputs @ signs.t() * scale + bias, rtol=1e-5, atol=1e-5)
    assert not layer.binarize_input


def test_op_rejects_real_weights_and_wrong_channels() -> None:
    x, ones = torch.randn(1, 4, 5, 5), torch.ones(2)
    with pytest.raises(ValueError, match="±1"):
        binary_conv2d(x, torch.randn(2, 4, 3, 3), ones, ones, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1], 1, 4, 0, 1)
    with pytest.raises(ValueError, match="N×8×H×W"):
        binary_conv2d(x, torch.ones(2, 8, 3, 3), ones, ones, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1], 1, 8, 0, 1)


def test_rsign_threshold_shifts_the_sign() -> None:
    quantizer = RSign(2, ApproxSign())
    with torch.no_grad():
        quantizer.beta.copy_(torch.tensor([0.5, -0.5]))
    x = torch.zeros(1, 2, 1, 1)
    assert quantizer(x).flatten().tolist() == [-1.0, 1.0]
    assert quantizer.deployed_input()(x).flatten().tolist() == [-0.5, 0.5]


def test_rprelu_starts_as_prelu() -> None:
    x = torch.tensor([[-2.0, 3.0]])
    assert RPReLU(2)(x).tolist() == [[-0.5, 3.0]]


def test_bnn_latent_weights_are_clipped_after_each_step_and_others_are_not() -> None:
    conv = _conv(4, 4, padding=1)
    with torch.no_grad():
        conv.weight.mul_(20)
    layers = {
        name: BinaryConv2d.from_conv(
            conv, get_scheme(name).weight_quantizer(conv.weight), get_scheme(name).input_quantizer(4)
        )
        for name in ("bnn", "xnor")
    }
    model = nn.Sequential(*layers.values())
    after_optimizer_step(model)
    assert layers["bnn"].weight.abs().max() <= 1
    assert layers["xnor"].weight.abs().max() > 1


def test_on_epoch_start_reaches_every_ede() -> None:
    conv = _conv(4, 4, padding=1)
    irnet = get_scheme("irnet")
    model = nn.Sequential(BinaryConv2d.from_conv(conv, irnet.weight_quantizer(conv.weight), irnet.input_quantizer(4)))
    values = on_epoch_start(model, 3, 4)
    assert set(values) == {"0.weight_quantizer.estimator", "0.input_quantizer.estimator"}
    assert all(v["t"] == pytest.approx(1.0) for v in values.values())
    with pytest.raises(ValueError, match="epoch"):
        on_epoch_start(model, 4, 4)


def test_costs_count_one_bit_weights_and_binary_macs() -> None:
    conv = _conv(64, 64, padding=1)
    xnor = get_scheme("xnor")
    model = nn.Sequential(BinaryConv2d.from_conv(conv, xnor.weight_quantizer(conv.weight), xnor.input_quantizer(64)))
    row = summary(capture(model, torch.randn(1, 64, 8, 8))).rows[1]
    assert row.cost.macs == 8 * 8 * 64 * 64 * 9
    assert row.cost.weight_bits == 64 * 64 * 9 + 64 * 32  # 1-bit weights, float32 bias


def test_summary_counts_float_and_binary_macs_apart() -> None:
    stem, conv = _conv(3, 64, padding=1), _conv(64, 64, padding=1)
    xnor = get_scheme("xnor")
    binary = BinaryConv2d.from_conv(conv, xnor.weight_quantizer(conv.weight), xnor.input_quantizer(64))
    table = summary(capture(nn.Sequential(stem, binary), torch.randn(1, 3, 8, 8)))
    assert table.total.float_macs == 8 * 8 * 64 * 3 * 9
    assert table.total.binary_macs == 8 * 8 * 64 * 64 * 9
    assert table.totals()["macs"] == table.total.float_macs + table.total.binary_macs
    header, *_, total = str(table).splitlines()
    assert "float MACs" in header and "binary MACs" in header
    assert f"{8 * 8 * 64 * 3 * 9:,}" in total and f"{8 * 8 * 64 * 64 * 9:,}" in total


def test_graph_pictures_mark_the_one_bit_layers(tmp_path) -> None:
    stem, conv = _conv(3, 16, padding=1), _conv(16, 16, padding=1)
    xnor = get_scheme("xnor")
    binary = BinaryConv2d.from_conv(conv, xnor.weight_quantizer(conv.weight), xnor.input_quantizer(16))
    gm = capture(nn.Sequential(stem, binary), torch.randn(1, 3, 8, 8))
    svg = write_graph_picture(gm, tmp_path / "g").read_text()
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    assert svg.count("— 1-bit") == 1 and "_1 — 1-bit" in svg  # the binary conv, not the float stem
    assert to_dot(gm).count("— 1-bit") == 1


def test_deployed_graph_is_a_copy_with_fixed_layers() -> None:
    conv = _conv(4, 4, padding=1)
    reactnet = get_scheme("reactnet")
    model = nn.Sequential(
        nn.Conv2d(4, 4, 1),
        BinaryConv2d.from_conv(conv, reactnet.weight_quantizer(conv.weight), reactnet.input_quantizer(4)),
    )
    x = torch.randn(2, 4, 6, 6)
    gm = capture(model.eval(), x)
    fixed = deployed(gm)
    assert isinstance(gm.get_submodule("1"), BinaryConv2d) and isinstance(
        fixed.get_submodule("1"), DeployedBinaryConv2d
    )
    assert not fixed.get_submodule("1").weight.requires_grad and set(
        fixed.get_submodule("1").weight.unique().tolist()
    ) == {-1.0, 1.0}
    assert torch.equal(run_eval(gm, x), run_eval(fixed, x))
    plain = capture(nn.Sequential(nn.Conv2d(4, 4, 1)).eval(), x)
    assert deployed(plain) is plain
