"""Layer-by-layer verification of binary `custom`, `int8` and `float` files: a correct file whose
end-to-end outputs differ from torch by a sign flip of float noise passes (the end-to-end error
is reported), and a file with one altered weight fails."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from helpers import randomize_batchnorm
from onnx import numpy_helper
from test_binary_lowering import MixedBinaryNet
from torch import nn

from bitfx.backends.onnx import export, verifier_for, verify
from bitfx.backends.onnx.layer_probe import binarizing_layers, probe
from bitfx.backends.onnx.verify_binary import BinaryVerifyReport
from bitfx.ir import capture
from bitfx.ir.deploy import deployed
from bitfx.passes import Pipeline

STYLES = ("custom", "int8", "float")
NOISE = 1e-7  # relative size of the float noise the construction puts on the first binary layer's input


class Block(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class Deep(nn.Module):
    """A float stem, six binary 3×3 blocks (nested modules) and a float classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16))
        self.blocks = nn.Sequential(*(Block(16) for _ in range(6)))
        self.head = nn.Linear(16 * 6 * 6, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.blocks(self.stem(x)), 1))


def binarized() -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    x = torch.randn((2, 3, 6, 6), generator=torch.Generator().manual_seed(1))
    gm = Pipeline.from_spec("fuse_bn,binarize").run(capture(randomize_batchnorm(Deep().eval()), x)).graph_module
    return gm, x


def stem_conv(gm: torch.nn.Module) -> nn.Conv2d:
    return next(m for name, m in gm.named_modules() if name.startswith("stem") and isinstance(m, nn.Conv2d))


def test_the_layers_are_found_and_a_correct_file_passes(tmp_path) -> None:
    gm, x = binarized()
    for style in STYLES:
        path = export(gm, x, tmp_path / f"{style}.onnx", lowering=style)
        report = verifier_for(style)(path, gm, x)
        assert isinstance(report, BinaryVerifyReport)
        assert len(report.layers) == 6 and all(layer.sums > 0 for layer in report.layers)
        assert report.ok, report.describe()
        assert report.mismatched_sums == 0 and report.to_json()["ok"]


@pytest.mark.parametrize("style", STYLES)
def test_a_sign_flip_from_float_noise_passes_with_the_end_to_end_error_reported(style: str, tmp_path) -> None:
    """Stem outputs a few 1e-7 below zero in the file and as far above zero in torch (the torch
    module's stem bias moved by 2·1e-7 of the largest output after export)."""
    gm, x = binarized()
    stem = stem_conv(gm)
    with torch.no_grad():
        y = stem(x)
        noise = NOISE * float(y.abs().max())
        channels = range(0, 16, 2)
        for c in channels:  # one element per channel lands 1e-7 below zero
            stem.bias[c] -= y[0, c, 2, 3] + noise
    path = export(gm, x, tmp_path / f"{style}.onnx", lowering=style)
    stem_output = next(n.output[0] for n in onnx.load(str(path)).graph.node if n.op_type == "Conv")
    in_file = probe(onnx.load(str(path)), [(stem_output, onnx.TensorProto.FLOAT)], [x.numpy()])[-1]
    assert all(-4 * noise < in_file[0, c, 2, 3] < 0 for c in channels)
    with torch.no_grad():
        for c in channels:
            stem.bias[c] += 2 * noise
        assert all(0 < stem(x)[0, c, 2, 3] < 4 * noise for c in channels)

    end_to_end = verify(path, gm, x)
    assert not end_to_end.ok  # the flips reach the output
    report = verifier_for(style)(path, gm, x)
    assert report.ok, report.describe()
    assert report.layers[0].mismatched_codes >= len(channels)  # the flips, counted as float noise
    assert report.free_running_error == pytest.approx(end_to_end.max_rel_error)
    assert "end to end: max rel error" in report.describe()


def _alter_one_weight(model: onnx.ModelProto, style: str) -> None:
    """Flip the sign of one weight of the second binary layer, as the file stores it."""
    kernels = {"custom": "BinaryConv2d", "int8": "ConvInteger", "float": "Conv"}
    nodes = [n for n in model.graph.node if n.op_type == kernels[style]]
    node = nodes[1] if style != "float" else nodes[2]  # the float style's first Conv is the stem
    init = next(i for i in model.graph.initializer if i.name == node.input[1])
    weights = numpy_helper.to_array(init).copy()
    if style == "custom":
        weights.reshape(-1)[0] ^= np.uint64(1)  # one packed bit
    elif style == "int8":
        weights.reshape(-1)[0] = 2 - weights.reshape(-1)[0]  # uint8 code 0 ↔ 2
    else:
        weights.reshape(-1)[0] *= -1
    init.CopyFrom(numpy_helper.from_array(weights, init.name))


@pytest.mark.parametrize("style", STYLES)
def test_a_file_with_one_altered_weight_fails(style: str, tmp_path) -> None:
    gm, x = binarized()
    path = export(gm, x, tmp_path / f"{style}.onnx", lowering=style)
    model = onnx.load(str(path))
    _alter_one_weight(model, style)
    onnx.save(model, str(path))
    report = verifier_for(style)(path, gm, x)
    assert not report.ok
    assert report.layers[1].mismatched_sums > 0
    assert all(layer.mismatched_sums == 0 for i, layer in enumerate(report.layers) if i != 1)


@pytest.mark.parametrize("style", STYLES)
def test_every_layer_configuration_passes_layer_by_layer(style: str, tmp_path) -> None:
    """One and zero padding, groups, stride, dilation, > 64 channels, RSign thresholds (input
    transforms), W1A32 (not binarizing: not probed) and BinaryGemm."""
    x = torch.randn((2, 3, 11, 11), generator=torch.Generator().manual_seed(4))
    gm = capture(MixedBinaryNet().eval(), x)
    report = verifier_for(style)(export(gm, x, tmp_path / f"{style}.onnx", lowering=style), gm, x)
    assert report.ok, report.describe()
    kernels = {layer.kernel for layer in report.layers}
    assert len(report.layers) == len(binarizing_layers(deployed(gm))) >= 4
    assert kernels == {"custom": {"BinaryConv2d", "BinaryGemm"}, "int8": {"ConvInteger", "MatMulInteger"}}.get(
        style, {"Conv", "Gemm"}
    )
