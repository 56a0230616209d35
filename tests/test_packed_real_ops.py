"""Ops that real exports contain, on the packed runtime against onnxruntime on the same file: GELU
(opset 20 Gelu and the erf form), nearest and bilinear Resize, adaptive average pooling that
exports as GatherND, 1-D convolution, broadcast Mul gates, and a BatchNormalization kept after a
binary convolution (folded into the thresholds, so the chain stays packed)."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from helpers import randomize_batchnorm
from torch import nn

from bitfx.backends.onnx import export, run_session, session
from bitfx.backends.packed import PackedModel
from bitfx.ir import capture
from bitfx.passes import Pipeline


def relative_error(expected: np.ndarray, actual: np.ndarray) -> float:
    return float(np.abs(expected.astype(np.float64) - actual).max() / max(np.abs(expected).max(), 1e-30))


def exported(model: nn.Module, shape: tuple, tmp_path, *, passes: str = "", lowering: str = "float"):
    """(path, input) of `model` captured, run through `passes` and lowered with `lowering`."""
    torch.manual_seed(0)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    gm = capture(randomize_batchnorm(model.eval()), x)
    if passes:
        gm = Pipeline.from_spec(passes).run(gm).graph_module
    return export(gm, x, tmp_path / "model.onnx", lowering=lowering), x


def check_same_as_onnxruntime(path, x: torch.Tensor, ops: set[str], tolerance: float = 1e-5) -> PackedModel:
    """The file holds `ops`; the packed runtime's outputs equal onnxruntime's within `tolerance` at two batch sizes."""
    present = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert ops <= present, f"expected {ops} in the export, got {sorted(present)}"
    packed = PackedModel(path)
    sess = session(path)
    for batch in (x, x[:1]):
        for expected, actual in zip(run_session(sess, [batch.numpy()]), packed.run([batch.numpy()])):
            assert actual.shape == expected.shape
            assert relative_error(expected, actual) <= tolerance
    return packed


class Gelus(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.exact, self.tanh = nn.GELU(), nn.GELU(approximate="tanh")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x) * 3
        erf_form = h * 0.5 * (1 + torch.erf(h / math.sqrt(2)))  # what older exports and hand-written GELUs contain
        return torch.cat([self.exact(h), self.tanh(h), erf_form], 1)


def test_gelu_and_erf(tmp_path) -> None:
    path, x = exported(Gelus(), (2, 3, 9, 9), tmp_path)
    check_same_as_onnxruntime(path, x, {"Gelu", "Erf"})


class Upsampling(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.up = nn.Upsample(scale_factor=2)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.conv(x)
        return [
            self.up(h),
            F.interpolate(h, scale_factor=3, mode="nearest"),
            F.interpolate(h, size=(13, 8), mode="nearest"),
            F.interpolate(h, size=(13, 11), mode="bilinear", align_corners=False),
            F.interpolate(h, size=(4, 5), mode="bilinear", align_corners=False),
            F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=True),
        ]


def test_nearest_and_bilinear_resize(tmp_path) -> None:
    path, x = exported(Upsampling(), (2, 3, 7, 6), tmp_path)
    modes = {
        (a.name, onnx.helper.get_attribute_value(a))
        for node in onnx.load(str(path)).graph.node
        if node.op_type == "Resize"
        for a in node.attribute
        if a.name in ("mode", "coordinate_transformation_mode")
    }
    assert {(b"linear" if "linear" in str(m) else m) for _, m in modes} >= {b"nearest", b"linear"}
    assert ("coordinate_transformation_mode", b"align_corners") in modes
    check_same_as_onnxruntime(path, x, {"Resize"})


class AdaptivePool(nn.Module):
    def __init__(self, size: tuple[int, int]) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3)
        self.pool = nn.AdaptiveAvgPool2d(size)
        self.fc = nn.Linear(6 * size[0] * size[1], 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.conv(x)), 1))


@pytest.mark.parametrize("size", [(5, 3), (3, 3)])
def test_adaptive_average_pooling(size: tuple[int, int], tmp_path) -> None:
    """Non-divisible output sizes export as Transpose/GatherND/Gather/Where sums; divisible ones as AveragePool."""
    path, x = exported(AdaptivePool(size), (2, 3, 14, 11), tmp_path)
    check_same_as_onnxruntime(path, x, {"GatherND"} if size == (5, 3) else set())


class Conv1d(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv1d(4, 8, 5, padding=2)
        self.b = nn.Conv1d(8, 8, 3, stride=2, dilation=2, padding=3, groups=2)
        self.c = nn.Conv1d(8, 6, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(torch.relu(self.b(torch.relu(self.a(x)))))


def test_one_dimensional_convolution(tmp_path) -> None:
    path, x = exported(Conv1d(), (2, 4, 33), tmp_path)
    check_same_as_onnxruntime(path, x, {"Conv"})


class SqueezeExcitation(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.reduce, self.expand = nn.Conv2d(16, 4, 1), nn.Conv2d(4, 16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x))
        gate = torch.sigmoid(self.expand(torch.relu(self.reduce(h.mean((2, 3), keepdim=True)))))
        return h * gate


def test_squeeze_excitation_mul_gate(tmp_path) -> None:
    path, x = exported(SqueezeExcitation(), (2, 3, 8, 8), tmp_path)
    check_same_as_onnxruntime(path, x, {"Mul", "Sigmoid"})


class BinaryWithBatchNorm(nn.Module):
    """The train-with-BN layout: every binary conv followed by a BatchNorm the lowering keeps."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32))
        self.body = nn.Sequential(
            *(m for _ in range(3) for m in (nn.Conv2d(32, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32)))
        )
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.stem(x)).mean((2, 3)))


def test_batch_norm_after_a_binary_conv_is_folded_into_its_thresholds(tmp_path) -> None:
    path, x = exported(BinaryWithBatchNorm(), (2, 3, 10, 10), tmp_path, passes="binarize", lowering="custom")
    ops = [node.op_type for node in onnx.load(str(path)).graph.node]
    assert ops.count("BatchNormalization") >= 3
    packed = check_same_as_onnxruntime(path, x, {"BatchNormalization", "BinaryConv2d"}, tolerance=1e-4)
    binary_then_binary = packed.report.binary_layers - 1  # every binary layer but the last feeds another one
    assert packed.report.packed_outputs == binary_then_binary > 0
