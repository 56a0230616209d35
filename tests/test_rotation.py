"""RBNN: the bi-rotation math, the rotated binary conv, its estimator schedule and the `rotate` pass."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import assert_same_state, state_snapshot
from torch import nn

from bitfx.errors import PassConfigError, PassError
from bitfx.ir import capture
from bitfx.ir.binary import (
    BinaryConv2d,
    RotatedBinaryConv2d,
    RotatedWeightBinarizer,
    SignActivation,
    StandardizedSign,
    TrainingAwareSign,
    binary_sign,
    standardize_filters,
)
from bitfx.ir.binary.rotation import (
    as_filter_matrices,
    binarization_error,
    factor_pair,
    procrustes_update,
    random_orthogonal,
    rotate_filters,
)
from bitfx.passes import Pipeline
from bitfx.passes.rotate import InsertRotation
from bitfx.train import on_epoch_start
from bitfx.zoo import digits
from examples.training import train_classifier


def small_cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 24, 3, padding=1, bias=False), nn.BatchNorm2d(24), nn.ReLU(),
        nn.Conv2d(24, 24, 3, padding=1, bias=False), nn.BatchNorm2d(24), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(24, 10),
    )  # fmt: skip


@pytest.fixture(scope="module")
def trained_cnn() -> nn.Module:
    """A small CNN trained for two epochs on the digits: weights with the structure training gives."""
    torch.manual_seed(0)
    return train_classifier(small_cnn(), digits((1, 1, 8, 8), split="train"), epochs=2)


def _seeded(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    ("n", "pair"),
    [(1, (1, 1)), (7, (1, 7)), (27, (3, 9)), (144, (12, 12)), (288, (16, 18)), (576, (24, 24)), (4608, (64, 72))],
)
def test_factor_pair_takes_the_largest_divisor_up_to_the_square_root(n: int, pair: tuple[int, int]) -> None:
    assert factor_pair(n) == pair
    with pytest.raises(ValueError, match="at least one weight"):
        factor_pair(0)


def test_random_orthogonal_is_orthogonal_seeded_and_not_always_a_rotation() -> None:
    matrices = [random_orthogonal(6, torch.Generator().manual_seed(seed)) for seed in range(20)]
    for q in matrices:
        torch.testing.assert_close(q @ q.t(), torch.eye(6), atol=1e-6, rtol=0)
    torch.testing.assert_close(matrices[0], random_orthogonal(6, torch.Generator().manual_seed(0)), atol=0, rtol=0)
    assert not torch.equal(matrices[0], matrices[1])
    assert {round(float(torch.linalg.det(q))) for q in matrices} == {-1, 1}  # Haar on O(n), both components


def _errors_after_each_iteration(
    matrices: torch.Tensor, left: torch.Tensor, right: torch.Tensor, iterations: int
) -> list[float]:
    errors = [binarization_error(matrices, left, right)]
    for _ in range(iterations):
        left, right = procrustes_update(matrices, left, right, iterations=1)
        errors.append(binarization_error(matrices, left, right))
    return errors


@pytest.mark.parametrize(("c_out", "n", "seed"), [(8, 27, 0), (32, 144, 1), (64, 288, 2), (16, 7, 3)])
def test_procrustes_never_increases_the_binarization_error_on_random_weights(c_out: int, n: int, seed: int) -> None:
    a, b = factor_pair(n)
    generator = torch.Generator().manual_seed(seed)
    matrices = as_filter_matrices(standardize_filters(_seeded(c_out, n, seed=seed)), a, b).double()
    left, right = random_orthogonal(a, generator, torch.float64), random_orthogonal(b, generator, torch.float64)
    errors = _errors_after_each_iteration(matrices, left, right, 8)
    assert all(after <= before * (1 + 1e-12) for before, after in zip(errors, errors[1:])), errors
    if a > 1:
        assert errors[-1] < 0.99 * errors[0], errors  # and it does move


def test_procrustes_never_increases_the_binarization_error_on_trained_weights(trained_cnn: nn.Module) -> None:
    generator = torch.Generator().manual_seed(0)
    for conv in (trained_cnn[3], trained_cnn[6]):
        a, b = factor_pair(conv.weight[0].numel())
        matrices = as_filter_matrices(standardize_filters(conv.weight.detach()), a, b).double()
        for left, right in [
            (random_orthogonal(a, generator, torch.float64), random_orthogonal(b, generator, torch.float64)),
            (torch.eye(a, dtype=torch.float64), torch.eye(b, dtype=torch.float64)),
        ]:
            errors = _errors_after_each_iteration(matrices, left, right, 6)
            assert all(after <= before * (1 + 1e-12) for before, after in zip(errors, errors[1:])), errors


def test_procrustes_steps_keep_the_rotations_orthogonal_and_solve_each_subproblem() -> None:
    """After one step, R1 maximises tr(Σ Bᵢᵀ R1ᵀ Xᵢ R2) for the Bᵢ and R2 it used: no random
    orthogonal matrix does better (a wrong transpose in the update fails this)."""
    a, b = 4, 6
    generator = torch.Generator().manual_seed(5)
    matrices = _seeded(10, a, b, seed=5).double()
    left, right = random_orthogonal(a, generator, torch.float64), random_orthogonal(b, generator, torch.float64)
    signs = binary_sign(rotate_filters(matrices, left, right))
    new_left, new_right = procrustes_update(matrices, left, right, iterations=1)
    torch.testing.assert_close(new_left @ new_left.t(), torch.eye(a, dtype=torch.float64))
    torch.testing.assert_close(new_right @ new_right.t(), torch.eye(b, dtype=torch.float64))

    def alignment(r1: torch.Tensor) -> float:
        return float((signs * rotate_filters(matrices, r1, right)).sum())

    best = alignment(new_left)
    assert all(alignment(random_orthogonal(a, generator, torch.float64)) <= best + 1e-9 for _ in range(200))
    assert best > alignment(left)


def test_training_aware_sign_derivative_and_schedule() -> None:
    weights, activations = TrainingAwareSign(), TrainingAwareSign(activations=True)
    x = torch.tensor([0.0, 0.05, 0.1, 0.2, -0.05, 100.0])
    for epoch, epochs, t in [(0, 10, 1e-2), (5, 10, 10**-0.5), (9, 10, 10**0.7)]:
        values = on_epoch_start(nn.ModuleList([weights, activations]), epoch, epochs)
        assert values["0"]["t"] == pytest.approx(t) and values["0"]["k"] == pytest.approx(max(1 / t, 1))
        assert values["1"]["t"] == pytest.approx(max(t, 1)) and values["1"]["k"] == 1
        expected = (max(1 / t, 1) * (math.sqrt(2) * t - t * t * x.abs())).clamp(min=0)
        torch.testing.assert_close(weights.derivative(x), expected)
        expected_a = (math.sqrt(2) * max(t, 1) - max(t, 1) ** 2 * x.abs()).clamp(min=0)
        torch.testing.assert_close(activations.derivative(x), expected_a)
    assert weights.derivative(torch.tensor([0.0])).item() == pytest.approx(math.sqrt(2) * 10**0.7)
    with pytest.raises(ValueError, match="t_min"):
        TrainingAwareSign(t_min=0)


@pytest.fixture
def rotated_graph():
    torch.manual_seed(0)
    gm = capture(small_cnn().eval(), _seeded(2, 1, 8, 8))
    return gm, Pipeline.from_spec("binarize,rotate").run(gm).graph_module


def test_the_pass_rotates_every_binary_conv_and_leaves_the_input_alone(rotated_graph) -> None:
    gm, _ = rotated_graph
    before = state_snapshot(gm)
    result = Pipeline.from_spec("binarize(scheme=bireal),rotate(seed=3,standardize_activations=false)").run(gm)
    assert_same_state(gm, before)
    stats = result.records[1].stats
    assert stats["rotated"] == 2 and stats["layers"] == {"3": "R1 12×12, R2 12×12", "6": "R1 12×12, R2 18×18"}
    layer = result.graph_module.get_submodule("6")
    assert isinstance(layer, RotatedBinaryConv2d) and not isinstance(
        result.graph_module.get_submodule("0"), BinaryConv2d
    )
    quantizer = layer.weight_quantizer
    torch.testing.assert_close(quantizer.angle, torch.full((24,), math.pi / 2))
    torch.testing.assert_close(quantizer.scale.value, gm.get_submodule("6").weight.abs().flatten(1).mean(1))
    assert isinstance(layer.input_quantizer, SignActivation) and isinstance(
        layer.input_quantizer.estimator, TrainingAwareSign
    )
    assert layer.input_quantizer.estimator.activations and not quantizer.estimator.activations
    torch.testing.assert_close(layer.weight, gm.get_submodule("6").weight)


def test_rotations_are_seeded(rotated_graph) -> None:
    gm, rotated = rotated_graph

    def rotations(spec: str) -> torch.Tensor:
        return Pipeline.from_spec(spec).run(gm).graph_module.get_submodule("6").weight_quantizer.right_rotation

    assert torch.equal(rotations("binarize,rotate"), rotated.get_submodule("6").weight_quantizer.right_rotation)
    assert not torch.equal(rotations("binarize,rotate(seed=1)"), rotations("binarize,rotate"))
    assert torch.equal(rotations("binarize,rotate(init=identity)"), torch.eye(18))
    uniform = (
        Pipeline.from_spec("binarize,rotate(angle_init=uniform)")
        .run(gm)
        .graph_module.get_submodule("6")
        .weight_quantizer.angle.detach()
    )
    assert bool(((uniform >= 0) & (uniform <= math.pi / 2)).all()) and float(uniform.std()) > 0.2


def test_layer_selection_and_bad_configurations(rotated_graph) -> None:
    gm, _ = rotated_graph
    result = Pipeline.from_spec("binarize,rotate(layers={'default': True, 'by_name': {'3': False}})").run(gm)
    assert result.records[1].stats["skipped"] == {"3": "not selected (name '3' → False)"}
    assert type(result.graph_module.get_submodule("3")) is BinaryConv2d
    twice = Pipeline.from_spec("binarize,rotate,rotate").run(gm).records[2]
    assert not twice.modified and set(twice.stats["skipped"].values()) == {"already rotated"}
    with pytest.raises(PassError, match="run 'binarize' before it"):
        Pipeline.from_spec("rotate").run(gm)
    with pytest.raises(PassConfigError, match="iterations"):
        Pipeline.from_spec("binarize,rotate(iterations=-1)")
    with pytest.raises(PassConfigError, match="t_min"):
        Pipeline.from_spec("binarize,rotate(t_min=0.0)")
    with pytest.raises(PassConfigError, match="angle_init"):
        Pipeline.from_spec("binarize,rotate(angle_init=zero)")


def test_standardize_activations_skips_layers_with_real_or_thresholded_inputs(rotated_graph) -> None:
    gm, _ = rotated_graph
    stats = (
        Pipeline.from_spec("binarize(scheme=dorefa_w1),rotate(standardize_activations=true)").run(gm).records[1].stats
    )
    assert stats["rotated"] == 2 and stats["activations_standardized"] == 0 and "W1A32" in stats["notes"]["3"]
    stats = (
        Pipeline.from_spec("binarize(scheme=reactnet),rotate(standardize_activations=true)").run(gm).records[1].stats
    )
    assert stats["activations_standardized"] == 0 and "RSign" in stats["notes"]["6"]
    result = Pipeline.from_spec("binarize,rotate(standardize_activations=true)").run(gm)
    assert result.records[1].stats["activations_standardized"] == 2 and result.records[1].stats["notes"] == {}
    quantizer = result.graph_module.get_submodule("6").input_quantizer
    assert isinstance(quantizer, StandardizedSign) and quantizer.estimator.activations
    x = _seeded(2, 24, 4, 4, seed=2) * torch.tensor([1.0, 5.0]).view(2, 1, 1, 1) + torch.tensor([0.3, -2.0]).view(
        2, 1, 1, 1
    )
    torch.testing.assert_close(quantizer(x), binary_sign(x - x.mean(dim=(1, 2, 3), keepdim=True)))
    assert not torch.equal(quantizer(x), binary_sign(x))


def _effective_signs(layer: RotatedBinaryConv2d) -> torch.Tensor:
    """sign(w3) from RBNN's formula (docs/rbnn.md), written out independently."""
    quantizer = layer.weight_quantizer
    w = layer.weight.detach()
    centred = w.flatten(1) - w.flatten(1).mean(1, keepdim=True)
    w2 = (centred / centred.std(1, keepdim=True)).view_as(w)
    a, b = quantizer.shape
    rotated = torch.stack(
        [quantizer.left_rotation.t() @ x @ quantizer.right_rotation for x in w2.reshape(-1, a, b)]
    ).view_as(w)
    w3 = w2 + quantizer.angle.detach().sin().abs().view(-1, 1, 1, 1) * (rotated - w2)
    return torch.where(w3 < 0, -1.0, 1.0)


def test_training_path_gradients_follow_the_adjustable_rotation(rotated_graph) -> None:
    """At θ = π/2 the latent weight gets no task gradient (w3 is the detached rotated weight);
    θ and α do. Away from π/2 the latent weight gets (1 − |sin θ|) of it."""
    _, rotated = rotated_graph
    layer = rotated.get_submodule("6").train()
    x = _seeded(3, 24, 8, 8, seed=1)
    layer(x).square().sum().backward()
    assert float(layer.weight.grad.abs().max()) == 0.0
    assert (
        float(layer.weight_quantizer.angle.grad.abs().max()) > 0
        and float(layer.weight_quantizer.scale.value.grad.abs().max()) > 0
    )
    with torch.no_grad():
        layer.weight_quantizer.angle.fill_(0.5)
    layer.weight.grad = None
    layer(x).square().sum().backward()
    assert float(layer.weight.grad.abs().max()) > 0
    assert torch.equal(layer.deploy_tensors()[0], _effective_signs(layer))


def test_on_epoch_start_updates_the_rotations_and_lowers_their_error(trained_cnn) -> None:
    gm = capture(trained_cnn, _seeded(2, 1, 8, 8))
    student = Pipeline.from_spec("binarize,rotate").run(gm).graph_module
    fixed = Pipeline.from_spec("binarize,rotate(iterations=0)").run(gm).graph_module
    quantizer = student.get_submodule("6").weight_quantizer
    left = quantizer.left_rotation.clone()
    values = on_epoch_start(student, 0, 4)
    assert not torch.equal(left, quantizer.left_rotation)
    for name in ("3", "6"):
        assert values[name]["rotation_error"] < values[name]["rotation_error_before"]
        assert values[f"{name}.weight_quantizer.estimator"] == {"t": pytest.approx(1e-2), "k": pytest.approx(100)}
    second = on_epoch_start(student, 1, 4)
    assert all(second[name]["rotation_error"] <= values[name]["rotation_error"] * (1 + 1e-5) for name in ("3", "6"))
    assert torch.equal(student.get_submodule("6").deploy_tensors()[0], _effective_signs(student.get_submodule("6")))
    fixed_left = fixed.get_submodule("6").weight_quantizer.left_rotation.clone()
    assert "6" not in on_epoch_start(fixed, 0, 4)
    assert torch.equal(fixed_left, fixed.get_submodule("6").weight_quantizer.left_rotation)


def test_the_weight_quantizer_checks_its_shapes() -> None:
    weight = _seeded(4, 3, 3, 3)  # n = 27 = 3 × 9
    with pytest.raises(ValueError, match="R1 must be 3×3 and R2 9×9"):
        RotatedWeightBinarizer(weight, torch.eye(9), torch.eye(3))
    with pytest.raises(ValueError, match="one angle per output channel"):
        RotatedWeightBinarizer(weight, torch.eye(3), torch.eye(9), angle=torch.zeros(3))
    quantizer = RotatedWeightBinarizer(weight.double(), torch.eye(3), torch.eye(9), angle=torch.zeros(4))
    assert quantizer.left_rotation.dtype == quantizer.angle.dtype == torch.float64
    torch.testing.assert_close(
        quantizer.transform(weight.double()), standardize_filters(weight.double())
    )  # θ = 0: no rotation


def test_defaults_follow_the_released_code(rotated_graph) -> None:
    """θ starts at π/2 and a plain sign's input is standardised per sample, as in the authors' released code."""
    _, rotated = rotated_graph
    layer = rotated.get_submodule("6")
    torch.testing.assert_close(layer.weight_quantizer.angle.detach(), torch.full((24,), math.pi / 2))
    assert isinstance(layer.input_quantizer, StandardizedSign)
    rotate = InsertRotation()
    assert rotate.angle_init == "half_pi" and rotate.standardize_activations is True and rotate.iterations == 3
