"""Zero-cost deployment of RBNN: the rotation is baked into the deployed ±1 weights, so the lowered
model is an ordinary binary conv (same ONNX ops, same packed runtime) and bit-exact with torch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from onnx import numpy_helper
from torch import fx, nn

from bitfx.backends.onnx import export, load_model, op_counts, verify
from bitfx.backends.packed import load
from bitfx.cli import main
from bitfx.format import unpack_signs
from bitfx.ir import capture
from bitfx.ir.binary import DeployedBinaryConv2d, RotatedBinaryConv2d, SampleCentering
from bitfx.ir.deploy import deployed
from bitfx.passes import Pipeline
from bitfx.train import after_optimizer_step, on_epoch_start

STYLES = ("float", "custom", "int8")


def _seeded(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def binary_net() -> nn.Sequential:
    """A float stem, then binary convs to the output (no float layer after them, so the
    lowered outputs can be compared bit for bit): padding, stride, bias, 70 > 64 channels."""
    return nn.Sequential(
        nn.Conv2d(3, 70, 3, padding=1), nn.BatchNorm2d(70),
        nn.Conv2d(70, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32),
        nn.Conv2d(32, 16, 3, stride=2, padding=1),
    )  # fmt: skip


def _trained(spec: str, seed: int = 0) -> tuple[fx.GraphModule, fx.GraphModule]:
    """(rotated graph after a few training steps and two rotation updates, the same graph with
    `binarize` only, untrained): θ has left π/2 and R1, R2 have moved, so the bake is not trivial."""
    torch.manual_seed(seed)
    gm = capture(binary_net().eval(), _seeded(2, 3, 9, 9, seed=1))
    plain = Pipeline.from_spec("binarize(keep_last=false)").run(gm).graph_module
    student = Pipeline.from_spec(f"binarize(keep_last=false),{spec}").run(gm).graph_module.train()
    for layer in student.modules():
        if isinstance(layer, RotatedBinaryConv2d):
            with torch.no_grad():
                layer.weight_quantizer.angle.uniform_(0.2, 1.4)
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-2)
    for epoch in range(2):
        on_epoch_start(student, epoch, 2)
        for step in range(3):
            optimizer.zero_grad()
            student(_seeded(4, 3, 9, 9, seed=10 * epoch + step)).square().mean().backward()
            optimizer.step()
            after_optimizer_step(student)
    return student.eval(), plain


def _signs_from_scratch(layer: RotatedBinaryConv2d) -> torch.Tensor:
    """sign(w2 + |sin θ|·(R1ᵀ X R2 − w2)) computed here, not by the layer."""
    q, w = layer.weight_quantizer, layer.weight.detach()
    w2 = (w - w.mean(dim=(1, 2, 3), keepdim=True)) / (w - w.mean(dim=(1, 2, 3), keepdim=True)).std(
        dim=(1, 2, 3), keepdim=True
    )
    rotated = torch.einsum(
        "ji,cjk,kl->cil", q.left_rotation, w2.reshape(w.shape[0], *q.shape), q.right_rotation
    ).reshape(w.shape)
    return torch.where(w2 + q.angle.detach().sin().abs().view(-1, 1, 1, 1) * (rotated - w2) < 0, -1.0, 1.0)


@pytest.fixture(scope="module")
def rotated() -> tuple[fx.GraphModule, fx.GraphModule]:
    return _trained("rotate(standardize_activations=false)")


def test_deployed_layers_hold_the_baked_signs_and_match_eval_bit_for_bit(rotated) -> None:
    student, _ = rotated
    layers = {name: m for name, m in student.named_modules() if isinstance(m, RotatedBinaryConv2d)}
    assert set(layers) == {"2", "4"}
    fixed = deployed(student)
    for name, layer in layers.items():
        deployed_layer = fixed.get_submodule(name)
        assert type(deployed_layer) is DeployedBinaryConv2d and deployed_layer.input_transform is None
        assert torch.equal(deployed_layer.weight, _signs_from_scratch(layer))
        unrotated = torch.where(
            layer.weight.detach() < layer.weight.detach().mean(dim=(1, 2, 3), keepdim=True), -1.0, 1.0
        )
        assert (deployed_layer.weight != unrotated).float().mean() > 0.2  # the rotation did change signs
        assert torch.equal(deployed_layer.scale, layer.weight_quantizer.scale.value.detach())
    x = _seeded(5, 3, 9, 9, seed=3)
    with torch.no_grad():
        assert torch.equal(student(x), fixed(x))


@pytest.mark.parametrize("style", STYLES)
def test_every_lowering_is_bit_exact_and_uses_the_ops_of_an_unrotated_model(
    style: str, rotated, tmp_path: Path
) -> None:
    student, plain = rotated
    x = _seeded(2, 3, 9, 9, seed=1)
    path = export(student, x, tmp_path / "rotated.onnx", lowering=style)
    report = verify(path, student, _seeded(3, 3, 9, 9, seed=4))
    assert report.ok and report.max_abs_error == 0.0, report
    assert op_counts(load_model(path)) == op_counts(
        load_model(export(plain, x, tmp_path / "plain.onnx", lowering=style))
    )
    if style == "custom":
        model = load_model(path)
        initializers = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
        nodes = [node for node in model.graph.node if node.domain == "bitfx"]
        for node, name in zip(nodes, ("2", "4"), strict=True):
            signs = _signs_from_scratch(student.get_submodule(name)).numpy()
            np.testing.assert_array_equal(
                unpack_signs(initializers[node.input[1]], signs.shape[1]), signs.transpose(0, 2, 3, 1)
            )


def test_the_packed_runtime_runs_the_rotated_file(rotated, tmp_path: Path) -> None:
    student, _ = rotated
    path = export(student, _seeded(2, 3, 9, 9, seed=1), tmp_path / "m.onnx", lowering="custom")
    x = _seeded(3, 3, 9, 9, seed=6)
    (actual,) = load(path, threads=1).run([x.numpy()])
    with torch.no_grad():
        expected = student(x).numpy()
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("style", STYLES)
def test_standardized_activations_deploy_as_a_centering_before_the_same_binary_conv(style: str, tmp_path: Path) -> None:
    student, _ = _trained("rotate(standardize_activations=true)", seed=1)
    fixed = deployed(student)
    assert all(isinstance(fixed.get_submodule(name).input_transform, SampleCentering) for name in ("2", "4"))
    x = _seeded(2, 3, 9, 9, seed=1)
    path = export(student, x, tmp_path / "m.onnx", lowering=style)
    report = verify(path, student, _seeded(3, 3, 9, 9, seed=7))
    assert report.ok, report
    ops = op_counts(load_model(path))
    assert ops["ReduceMean"] == 2 and ops["Sub"] >= 2


def test_compile_resnet20_with_rotation(tmp_path: Path) -> None:
    """The issue's acceptance command."""
    code = main(
        [
            "compile",
            "bitfx.zoo:resnet20",
            "--passes",
            "fuse_bn,binarize,rotate",
            "--lowering",
            "custom",
            "-o",
            str(tmp_path / "m.onnx"),
            "--report",
            str(tmp_path / "r.json"),
        ]
    )
    report = json.loads((tmp_path / "r.json").read_text())
    assert code == 0 and report["verify"]["ok"] is True
    assert report["passes"][2]["name"] == "rotate" and report["passes"][2]["stats"]["rotated"] == 20
    assert report["onnx"]["ops"]["bitfx.BinaryConv2d"] == 20
