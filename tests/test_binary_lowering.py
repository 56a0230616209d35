"""Binary layers lowered to ONNX in the `float`, `custom` and `int8` styles, run by onnxruntime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import fx, nn

from bitfx import zoo
from bitfx.backends.onnx import export, load_model, op_counts, optimized_op_counts, verify
from bitfx.backends.onnx.custom import binary_weight_arrays
from bitfx.cli import main
from bitfx.format import CONV_ATTRIBUTES, unpack_signs
from bitfx.ir import capture
from bitfx.ir.binary import BinaryConv2d, BinaryLinear, DeployedBinaryConv2d, get_scheme
from bitfx.ir.deploy import deployed
from bitfx.passes import Pipeline

STYLES = ("float", "custom", "int8")


def _seeded(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def binarized():
    """`binarized(name)` -> (fuse_bn,binarize GraphModule, example input), fresh models: their
    folded biases are 0, so many binary outputs are exactly 0 and the next sign must say +1."""
    cache: dict[str, tuple[fx.GraphModule, torch.Tensor]] = {}

    def get(name: str):
        if name not in cache:
            torch.manual_seed(0)
            model = getattr(zoo, name)().eval()
            x = _seeded((2, *model.example_input_shape[1:]), 1)
            cache[name] = (Pipeline.from_spec("fuse_bn,binarize").run(capture(model, x)).graph_module, x)
        return cache[name]

    return get


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("name", [name for name in zoo.MODELS if name != "resnet20"])  # resnet20: through the CLI below
def test_every_model_matches_torch_in_every_lowering(name: str, style: str, binarized, tmp_path: Path) -> None:
    gm, x = binarized(name)
    path = export(gm, x, tmp_path / "m.onnx", lowering=style)
    report = verify(path, gm, _seeded((3, *x.shape[1:]), 2))
    assert report.ok, report
    ops = op_counts(load_model(path))
    binary = sum(isinstance(m, (BinaryConv2d, BinaryLinear)) for m in gm.modules())
    assert binary > 0
    if style == "custom":
        assert ops["bitfx.BinaryConv2d"] == binary
    if style == "int8":
        assert ops["ConvInteger"] == binary


@pytest.mark.parametrize("style", STYLES)
def test_compile_resnet20_binarized(style: str, tmp_path: Path) -> None:
    code = main(
        [
            "compile",
            "bitfx.zoo:resnet20",
            "--passes",
            "fuse_bn,binarize",
            "--lowering",
            style,
            "-o",
            str(tmp_path / "m.onnx"),
            "--report",
            str(tmp_path / "r.json"),
        ]
    )
    report = json.loads((tmp_path / "r.json").read_text())
    assert code == 0 and report["verify"]["ok"] is True
    assert report["passes"][1]["stats"]["binarized"] == 20
    assert report["after"]["weight_bytes"] < report["before"]["weight_bytes"] / 10
    if style == "custom":
        assert report["onnx"]["ops"]["bitfx.BinaryConv2d"] == 20
    if style == "int8":
        assert report["onnxruntime"]["optimized_ops"]["ConvInteger"] == 20  # every binary conv runs on integer kernels
        assert report["onnxruntime"]["quantized_layers"]["fused_convs"] == 20


class MixedBinaryNet(nn.Module):
    """Binary layers in every configuration the contract covers: one and zero padding, groups,
    stride, dilation, more than 64 input channels, RSign thresholds, W1A32, BinaryGemm."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)

        def binary(conv: nn.Conv2d, scheme: str, pad_value: int) -> BinaryConv2d:
            chosen = get_scheme(scheme)
            layer = BinaryConv2d.from_conv(
                conv,
                chosen.weight_quantizer(conv.weight),
                chosen.input_quantizer(conv.in_channels),
                pad_value=pad_value,
            )
            if hasattr(layer.input_quantizer, "beta"):
                nn.init.uniform_(layer.input_quantizer.beta, -0.2, 0.2)
            return layer

        self.stem = nn.Conv2d(3, 70, 3, padding=1)
        self.one_padding = binary(nn.Conv2d(70, 70, 3, padding=1), "xnor", 1)
        self.minus_one_padding = binary(nn.Conv2d(70, 66, 3, stride=2, padding=2, dilation=2, groups=2), "reactnet", -1)
        self.depthwise = binary(nn.Conv2d(66, 66, 3, padding=1, groups=66, bias=False), "bnn", 0)
        self.real_inputs = binary(nn.Conv2d(66, 64, 1), "dorefa_w1", 0)
        self.pool = nn.AdaptiveAvgPool2d(2)
        linear = nn.Linear(256, 40)
        self.hidden = BinaryLinear.from_linear(
            linear, get_scheme("irnet").weight_quantizer(linear.weight), get_scheme("irnet").input_quantizer(256)
        )
        linear = nn.Linear(40, 10)
        self.hidden_real = BinaryLinear.from_linear(
            linear, get_scheme("dorefa_w1").weight_quantizer(linear.weight), None
        )
        self.head = nn.Linear(10, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.real_inputs(self.depthwise(self.minus_one_padding(self.one_padding(self.stem(x)))))
        return self.head(self.hidden_real(self.hidden(torch.flatten(self.pool(x), 1))))


@pytest.fixture(scope="module")
def mixed() -> tuple[fx.GraphModule, torch.Tensor]:
    x = _seeded((2, 3, 11, 11), 4)
    return capture(MixedBinaryNet().eval(), x), x


@pytest.fixture(scope="module")
def mixed_files(mixed, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    gm, x = mixed
    out = tmp_path_factory.mktemp("mixed")
    return {style: export(gm, x, out / f"{style}.onnx", lowering=style) for style in STYLES}


@pytest.mark.parametrize("style", STYLES)
def test_every_layer_configuration_matches_torch(style: str, mixed, mixed_files) -> None:
    gm, _ = mixed
    report = verify(mixed_files[style], gm, _seeded((3, 3, 11, 11), 5))
    assert report.ok, report


def test_custom_file_follows_the_contract(mixed, mixed_files) -> None:
    gm, _ = mixed
    model = load_model(mixed_files["custom"])
    assert {(f.domain, f.name) for f in model.functions} == {("bitfx", "BinaryConv2d"), ("bitfx", "BinaryGemm")}
    assert any(entry.domain == "bitfx" and entry.version == 1 for entry in model.opset_import)
    nodes = [node for node in model.graph.node if node.domain == "bitfx"]
    assert [node.op_type for node in nodes] == ["BinaryConv2d"] * 4 + ["BinaryGemm"] * 2
    attributes = {name: onnx.helper.get_attribute_value(a) for a in nodes[1].attribute for name in [a.name]}
    assert set(attributes) == set(CONV_ATTRIBUTES)
    assert attributes == {
        "kernel_shape": [3, 3], "strides": [2, 2], "pads": [2, 2, 2, 2], "dilations": [2, 2],
        "group": 2, "in_channels": 70, "pad_value": -1, "binarize_input": 1,
    }  # fmt: skip
    assert {onnx.helper.get_attribute_value(a) for a in nodes[3].attribute if a.name == "binarize_input"} == {0}

    layers = [
        gm.get_submodule(name)
        for name in ("one_padding", "minus_one_padding", "depthwise", "real_inputs", "hidden", "hidden_real")
    ]
    initializers = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    for node, layer in zip(nodes, layers, strict=True):
        signs, scale, bias = (t.numpy() for t in layer.deploy_tensors())
        packed = initializers[node.input[1]]
        assert packed.dtype == np.uint64
        if node.op_type == "BinaryConv2d":
            channels = signs.shape[1]
            assert packed.shape == (signs.shape[0], *signs.shape[2:], -(-channels // 64))
            np.testing.assert_array_equal(
                unpack_signs(packed, channels), signs.transpose(0, 2, 3, 1)
            )  # exact round trip
        else:
            np.testing.assert_array_equal(unpack_signs(packed, signs.shape[1]), signs)
        np.testing.assert_array_equal(initializers[node.input[2]], scale)
        np.testing.assert_array_equal(initializers[node.input[3]], bias)


def test_int8_file_holds_8_bit_weights_and_runs_integer_kernels(mixed, mixed_files) -> None:
    model = load_model(mixed_files["int8"])
    initializers = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    integer_nodes = [node for node in model.graph.node if node.op_type in ("ConvInteger", "MatMulInteger")]
    assert [node.op_type for node in integer_nodes] == ["ConvInteger"] * 3 + [
        "MatMulInteger"
    ]  # W1A32 layers stay float
    for node in integer_nodes:
        weights = initializers[node.input[1]]
        assert weights.dtype == np.uint8 and set(np.unique(weights)) <= {0, 2}  # codes of −1 and +1
        assert initializers[node.input[3]] == 1  # the weight zero point
    optimized = optimized_op_counts(mixed_files["int8"])
    assert optimized["ConvInteger"] == 3 and optimized["MatMulInteger"] == 1


def test_custom_binary_weights_take_at_most_a_thirtieth_of_float(
    tmp_path: Path, binarized, capsys: pytest.CaptureFixture[str]
) -> None:
    gm, x = binarized("vgg_small")
    path = export(gm, x, tmp_path / "m.onnx", lowering="custom")
    packed = binary_weight_arrays(load_model(path))
    layers = [m for m in deployed(gm).modules() if isinstance(m, DeployedBinaryConv2d)]
    assert len(packed) == len(layers) == 5
    for (name, words), layer in zip(packed.items(), layers, strict=True):
        assert words.nbytes * 30 <= layer.weight.numel() * 4, name

    assert main(["inspect", str(path)]) == 0
    rows = [
        line
        for line in capsys.readouterr().out.splitlines()
        if "bitfx.BinaryConv2d" in line and not line.startswith("ops:")
    ]
    assert len(rows) == 5
    # features.3: 128×128×3×3 weights → 128·3·3·2 words of 8 bytes, plus float scale and bias
    assert rows[0].split()[-1] == f"{128 * 9 * 2 * 8 + 2 * 128 * 4:,}"


def test_lowering_a_model_without_binary_layers(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval()
    x = _seeded((1, 3, 6, 6), 0)
    gm = capture(model, x)
    for style in ("custom", "int8"):
        assert verify(export(gm, x, tmp_path / f"{style}.onnx", lowering=style), gm, x).ok
