"""The `integer` lowering: binary layers as QLinearConv / MatMulInteger / ConvInteger, exact layer by layer, fused by
onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from bitfx import zoo as models
from bitfx.backends.onnx import export, load_model, optimized_op_counts, quantized_layer_fusion, verifier_for
from bitfx.backends.onnx.integer import integer_sign_layers, sign_thresholds
from bitfx.ir import capture
from bitfx.ir.binary import BinaryConv2d, BinaryLinear, DeployedBinaryConv2d
from bitfx.ir.binary.deployed import ConvGeometry
from bitfx.passes import Pipeline
from tests.test_binary_lowering import MixedBinaryNet

QLINEAR_CONVS = ("QLinearConv", "com.microsoft.QLinearConv")
INTEGER_SUMS = ("ConvInteger", "MatMulInteger", "com.microsoft.MatMulIntegerToFloat")


def _seeded(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _fused_kernels(path: Path, binary_linears: int) -> tuple[int, int]:
    """onnxruntime's QLinearConvs and its integer kernels with an int32 sum that run binary convs (ConvInteger or a
    channels-last MatMulInteger; the `binary_linears` MatMulIntegers of linear layers left out)."""
    optimized = optimized_op_counts(path)
    integer = sum(optimized.get(op, 0) for op in INTEGER_SUMS) - binary_linears
    return sum(optimized.get(op, 0) for op in QLINEAR_CONVS), integer


@pytest.mark.parametrize("name", models.MODELS)
def test_every_model_is_exact_layer_by_layer_and_every_binary_conv_fused(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = getattr(models, name)().eval()
    x = _seeded((2, *model.example_input_shape[1:]), 1)
    gm = (
        Pipeline.from_spec("fuse_bn,binarize").run(capture(model, x)).graph_module
    )  # fresh: biases 0, sign ties at k = 0
    path = export(gm, x, tmp_path / "m.onnx", lowering="integer")
    report = verifier_for("integer")(path, gm, _seeded((3, *x.shape[1:]), 2))
    assert report.ok and report.mismatches == 0, report.describe()
    forms = integer_sign_layers(gm)
    binary_convs = sum(isinstance(m, BinaryConv2d) for m in gm.modules())
    assert len(report.layers) == binary_convs + sum(isinstance(m, BinaryLinear) for m in gm.modules()) == len(forms)
    qlinear, integer = _fused_kernels(path, sum(isinstance(m, BinaryLinear) for m in gm.modules()))
    assert qlinear == sum(form == "sign" for form in forms.values()) and qlinear + integer == binary_convs
    assert quantized_layer_fusion(path)["all_fused"]


def test_resnet18_writes_the_first_conv_of_every_block_as_qlinearconv() -> None:
    torch.manual_seed(0)
    model = models.resnet18().eval()
    gm = Pipeline.from_spec("fuse_bn,binarize").run(capture(model, torch.randn(model.example_input_shape))).graph_module
    forms = integer_sign_layers(gm)
    assert sorted(name for name, form in forms.items() if form == "sign") == [f"layers.{i}.conv1" for i in range(8)]
    assert all("needs the float value" in form for name, form in forms.items() if form != "sign")


def test_every_layer_configuration_is_exact(tmp_path: Path) -> None:
    x = _seeded((2, 3, 11, 11), 4)
    gm = capture(MixedBinaryNet().eval(), x)
    path = export(gm, x, tmp_path / "m.onnx", lowering="integer")
    report = verifier_for("integer")(path, gm, _seeded((3, 3, 11, 11), 5))
    assert report.ok, report.describe()
    kernels = {layer.name: layer.kernel for layer in report.layers}
    assert kernels == {
        "one_padding": "MatMulInteger",
        "minus_one_padding": "QLinearConv",
        "depthwise": "ConvInteger",
        "hidden": "MatMulInteger",
    }
    assert _fused_kernels(path, 1) == (1, 2)


class SignedScales(nn.Module):
    """Two deployed binary convs; the first has negative, zero and positive scales and biases
    that put the sign's switch point at many integers."""

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(7)
        geometry = ConvGeometry((3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, 8, 0, True)
        sign = lambda shape: torch.where(torch.rand(shape, generator=generator) < 0.5, -1.0, 1.0)  # noqa: E731
        scale = torch.randn(16, generator=generator) * 0.1
        scale[:2] = 0.0
        bias = (
            torch.randint(-6, 7, (16,), generator=generator).float() * 0.05
            + torch.randn(16, generator=generator) * 0.01
        )
        bias[5] = 0.0
        self.first = DeployedBinaryConv2d(geometry, sign((16, 8, 3, 3)), scale, bias)
        self.second = DeployedBinaryConv2d(
            ConvGeometry((3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 1, 16, 1, True),
            sign((4, 16, 3, 3)),
            torch.ones(4),
            torch.zeros(4),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.first(x))


def test_negative_and_zero_scales_fold_into_the_requantization(tmp_path: Path) -> None:
    x = _seeded((4, 8, 9, 9), 8)
    gm = capture(SignedScales().eval(), x)
    path = export(gm, x, tmp_path / "m.onnx", lowering="integer")
    report = verifier_for("integer")(path, gm, x)
    assert report.ok and report.layers[1].codes > 0, report.describe()
    model = load_model(path)
    initializers = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    (conv,) = [node for node in model.graph.node if node.op_type == "QLinearConv"]
    weights = initializers[conv.input[3]]
    assert weights.dtype == np.int8 and set(np.unique(weights)) == {-1, 1}
    np.testing.assert_array_equal(initializers[conv.input[5]], 0)  # symmetric weights: the fast U8S8 kernels


def test_sign_thresholds_match_the_float_formula() -> None:
    scale = torch.tensor([0.5, -0.25, 0.0, 0.0, 1e-3, 0.3, float("nan"), float("inf")])
    bias = torch.tensor([0.0, 0.3, -1.0, 0.0, -2.0, -0.3, 0.0, 0.0])
    threshold, flip = sign_thresholds(scale, bias, 10)
    for c in range(len(scale)):
        for k in range(-10, 11):
            y = torch.tensor(float(k)) * scale[c] + bias[c]
            assert (not bool(y < 0)) == ((-k if flip[c] else k) >= threshold[c]), (c, k)
    assert threshold[0] == 0 and not flip[0]  # y = 0 at k = 0 gives +1
    assert threshold[2] == 11 and threshold[3] == -10  # never +1 / always +1


def test_the_check_finds_a_wrong_threshold(tmp_path: Path) -> None:
    x = _seeded((2, 3, 11, 11), 4)
    gm = capture(MixedBinaryNet().eval(), x)
    path = export(gm, x, tmp_path / "m.onnx", lowering="integer")
    model = onnx.load(str(path))
    (conv,) = [node for node in model.graph.node if node.op_type == "QLinearConv"]
    (bias,) = [init for init in model.graph.initializer if init.name == conv.input[8]]
    bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) + 3, bias.name))
    onnx.save(model, str(tmp_path / "broken.onnx"))
    report = verifier_for("integer")(tmp_path / "broken.onnx", gm, x)
    assert not report.ok and report.mismatches > 0


@pytest.mark.parametrize(
    "geometry",
    [
        ConvGeometry((3, 2), (2, 1), (2, 0, 1, 1), (2, 3), 1, 5, -1, True),  # rectangular, dilated, uneven pads
        ConvGeometry((1, 1), (2, 2), (0, 0, 0, 0), (1, 1), 1, 5, 0, True),  # a downsampling 1×1 conv
        ConvGeometry((3, 3), (3, 2), (1, 1, 1, 1), (1, 1), 1, 5, 1, True),  # ±1 padding, strides the size misses
    ],
)
def test_channels_last_matmul_conv_is_exact_for_any_geometry(geometry: ConvGeometry, tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(9)
    weight = torch.where(torch.rand((6, 5, *geometry.kernel_shape), generator=generator) < 0.5, -1.0, 1.0)
    layer = DeployedBinaryConv2d(geometry, weight, torch.randn(6, generator=generator), torch.zeros(6))
    x = _seeded((2, 5, 10, 11), 10)
    gm = capture(nn.Sequential(layer).eval(), x)
    path = export(gm, x, tmp_path / "m.onnx", lowering="integer")
    report = verifier_for("integer")(path, gm, x)
    assert report.ok and report.layers[0].kernel == "MatMulInteger" and report.layers[0].sums > 0, report.describe()
    assert _fused_kernels(path, 0) == (0, 1)
    model = onnx.load(str(path))
    (matmul,) = [node for node in model.graph.node if node.op_type == "MatMulInteger"]
    (matrix,) = [init for init in model.graph.initializer if init.name == matmul.input[1]]
    flipped = numpy_helper.to_array(matrix).copy()
    flipped[-1, 0] *= -1
    matrix.CopyFrom(numpy_helper.from_array(flipped, matrix.name))
    onnx.save(model, str(tmp_path / "broken.onnx"))
    assert verifier_for("integer")(tmp_path / "broken.onnx", gm, x).mismatches > 0
