"""`bitfx.train.CoGD` against the authors' convolutional-sparse-coding solver (MATLAB `backtracking_d`),
against `torch.optim.SGD` with the coupling off, and on a small sparse-coding problem."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from bitfx.train import CoGD, GatedWeight, gate_l1_penalty

RADIUS, LAMBDA, MAX_IT = 2, 1.0, 20


def _problem(images: int = 3, kernels: int = 2, side: int = 8, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Images b (N×H×W), padded full-size kernels d (K×P×Q, 5×5 support around the origin), codes z (N×K×P×Q)."""
    rng = np.random.default_rng(seed)
    size = side + 2 * RADIUS
    b = rng.standard_normal((images, side, side))
    small = rng.standard_normal((kernels, 2 * RADIUS + 1, 2 * RADIUS + 1))
    d = np.zeros((kernels, size, size))
    d[:, : 2 * RADIUS + 1, : 2 * RADIUS + 1] = small
    d = np.roll(d, (-RADIUS, -RADIUS), axis=(1, 2))
    z = rng.standard_normal((images, kernels, size, size))
    return b, d, z


def _residual_np(b: np.ndarray, d: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Σ_k d_k ⊛ z_nk (circular) minus b on the image window, 0 on the padding: the data term's x-gradient."""
    dz = np.real(np.fft.ifft2((np.fft.fft2(d)[None] * np.fft.fft2(z)).sum(axis=1)))
    residual = np.zeros_like(dz)
    residual[:, RADIUS:-RADIUS, RADIUS:-RADIUS] = dz[:, RADIUS:-RADIUS, RADIUS:-RADIUS] - b
    return residual


def _gradients_np(b: np.ndarray, d: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """∂/∂d and ∂/∂z of ½‖crop(Dz) − b‖² + λ‖z‖₁ (correlations in the Fourier domain)."""
    r_hat = np.fft.fft2(_residual_np(b, d, z))
    grad_d = np.real(np.fft.ifft2((np.conj(np.fft.fft2(z)) * r_hat[:, None]).sum(axis=0)))
    grad_z = np.real(np.fft.ifft2(np.conj(np.fft.fft2(d))[None] * r_hat[:, None])) + LAMBDA * np.sign(z)
    return grad_d, grad_z


def _backtracking_d(d: np.ndarray, z: np.ndarray, alpha: float, d_old: np.ndarray) -> np.ndarray:
    """The MATLAB step's equations: at the α share of positions with the largest Σ_n z, d ← 0.01·d + 0.99·d_old."""
    score = z.sum(axis=0).ravel()
    chosen = np.argsort(-score, kind="stable")[: int(round(alpha * score.size))]
    out = d.copy().ravel()
    out[chosen] = 0.01 * out[chosen] + 0.99 * d_old.ravel()[chosen]
    return out.reshape(d.shape)


def _backtracking_d_literal(d: np.ndarray, z: np.ndarray, alpha: float, d_old: np.ndarray) -> np.ndarray:
    """The MATLAB loop as written, on arrays laid out (P, Q, K) column-major: uint8 count, ranks 2..n+1,
    and the position decode with slice stride P·Q + 1."""
    d_m, d_old_m = d.transpose(1, 2, 0).copy(), d_old.transpose(1, 2, 0)
    z_sum = z.sum(axis=0).transpose(1, 2, 0)
    len1, len3 = d_m.shape[0], d_m.size
    len2 = d_m.shape[0] * d_m.shape[1] + 1
    indb = np.argsort(z_sum.ravel(order="F"), kind="stable") + 1  # MATLAB's 1-based sort indices
    for i in range(1, min(int(round(alpha * len3)), 255) + 1):
        index = int(indb[len3 - i - 1])
        d3 = (index - 1) // len2 + 1
        d2 = ((index - 1) % len2) // len1 + 1
        d1 = ((index % len2) - 1) % len1 + 1
        d_m[d1 - 1, d2 - 1, d3 - 1] = d_m[d1 - 1, d2 - 1, d3 - 1] * 0.01 + d_old_m[d1 - 1, d2 - 1, d3 - 1] * 0.99
    return d_m.transpose(2, 0, 1)


def _objective(b: torch.Tensor, d: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    dz = torch.fft.ifft2(torch.fft.fft2(d)[None] * torch.fft.fft2(z)).real.sum(dim=1)
    return 0.5 * (dz[:, RADIUS:-RADIUS, RADIUS:-RADIUS] - b).pow(2).sum() + LAMBDA * z.abs().sum()


def _cogd_step(b: np.ndarray, d: np.ndarray, z: np.ndarray, lr: float) -> tuple[np.ndarray, np.ndarray]:
    kernels, codes = nn.Parameter(torch.tensor(d)), nn.Parameter(torch.tensor(z))
    optimizer = CoGD([kernels, codes], [GatedWeight(kernels, codes, dim=None)], lr=lr, total_steps=MAX_IT)
    _objective(torch.tensor(b), kernels, codes).backward()
    optimizer.step()
    return kernels.detach().numpy(), codes.detach().numpy()


def test_one_step_matches_the_released_solvers_backtracking_step() -> None:
    b, d, z = _problem()
    lr = 1e-3
    grad_d, grad_z = _gradients_np(b, d, z)
    expected_d = _backtracking_d(d - lr * grad_d, z, (MAX_IT - 1) / (2 * MAX_IT), d)
    kernels, codes = _cogd_step(b, d, z, lr)
    np.testing.assert_allclose(codes, z - lr * grad_z, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(kernels, expected_d, rtol=1e-9, atol=1e-12)
    drawn_back = ~np.isclose(kernels, d - lr * grad_d, rtol=1e-9, atol=1e-12)
    assert drawn_back.sum() == round(0.475 * d.size) == 137


def test_the_literal_matlab_loop_differs_only_where_the_docstring_says() -> None:
    """One kernel (positions decode correctly within the first slice), fewer than 255 positions: the loop
    draws back the sorted ranks 2..n+1, i.e. the equations' top n+1 positions without the largest."""
    b, d, z = _problem(kernels=1)
    lr, alpha = 1e-3, (MAX_IT - 1) / (2 * MAX_IT)
    grad_d, _ = _gradients_np(b, d, z)
    stepped = d - lr * grad_d
    literal = _backtracking_d_literal(stepped, z, alpha, d)
    count = int(round(alpha * d.size))
    largest = np.argmax(z.sum(axis=0))
    assert not np.isclose(literal.ravel()[largest], 0.01 * stepped.ravel()[largest] + 0.99 * d.ravel()[largest])
    one_more = _backtracking_d(stepped, z, (count + 1) / d.size, d).ravel()
    one_more[largest] = stepped.ravel()[largest]
    np.testing.assert_allclose(literal.ravel(), one_more, rtol=1e-12)


def _gated_model(seed: int = 0) -> tuple[nn.Conv2d, nn.Parameter]:
    torch.manual_seed(seed)
    return nn.Conv2d(3, 6, 3), nn.Parameter(torch.rand(6) + 0.5)


def _gated_loss(conv: nn.Conv2d, gate: nn.Parameter, x: torch.Tensor) -> torch.Tensor:
    return (conv(x) * gate.view(1, -1, 1, 1)).tanh().pow(2).mean() + 1e-2 * gate.abs().sum()


def test_without_coupling_it_is_sgd() -> None:
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    (conv_a, gate_a), (conv_b, gate_b) = _gated_model(), _gated_model()
    pairs = [GatedWeight(conv_a.weight, gate_a)]
    params = [*conv_a.parameters(), gate_a]
    cogd = CoGD(params, pairs, lr=0.1, total_steps=10, momentum=0.9, weight_decay=1e-3, backtrack=0.0)
    sgd = torch.optim.SGD([*conv_b.parameters(), gate_b], lr=0.1, momentum=0.9, weight_decay=1e-3)
    for _ in range(5):
        for optimizer, conv, gate in ((cogd, conv_a, gate_a), (sgd, conv_b, gate_b)):
            optimizer.zero_grad()
            _gated_loss(conv, gate, x).backward()
            optimizer.step()
    for mine, reference in zip([*conv_a.parameters(), gate_a], [*conv_b.parameters(), gate_b]):
        torch.testing.assert_close(mine, reference, rtol=0, atol=0)


def test_per_channel_gates_draw_back_the_channels_with_the_largest_gates() -> None:
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    conv, gate = _gated_model()
    before = conv.weight.detach().clone()
    optimizer = CoGD([*conv.parameters(), gate], [GatedWeight(conv.weight, gate, dim=0)], lr=0.1, total_steps=4)
    _gated_loss(conv, gate, x).backward()
    sgd_weight = before - 0.1 * conv.weight.grad
    largest = torch.argsort(gate.detach(), descending=True)[: round(0.5 * 3 / 4 * 6)]
    optimizer.step()
    expected = sgd_weight.clone()
    expected[largest] = before[largest] + 0.01 * (sgd_weight[largest] - before[largest])
    torch.testing.assert_close(conv.weight.detach(), expected)
    assert optimizer.fraction_at(4) == 0.0


def test_it_decreases_the_sparse_coding_objective() -> None:
    b, d, z = (torch.tensor(array) for array in _problem(seed=3))
    kernels, codes = nn.Parameter(d), nn.Parameter(z)
    optimizer = CoGD([kernels, codes], [GatedWeight(kernels, codes, dim=None)], lr=2e-3, total_steps=50)
    values = []
    for _ in range(50):
        optimizer.zero_grad()
        loss = _objective(b, kernels, codes)
        values.append(loss.item())
        loss.backward()
        optimizer.step()
    assert _objective(b, kernels, codes).item() < 0.5 * values[0]
    assert all(later <= earlier * 1.001 for earlier, later in zip(values, values[1:]))


def test_pairs_must_be_optimised_and_shapes_must_match() -> None:
    conv, gate = _gated_model()
    with pytest.raises(ValueError, match="missing: gate"):
        CoGD(conv.parameters(), [GatedWeight(conv.weight, gate)], lr=0.1, total_steps=1)
    with pytest.raises(ValueError, match="shape"):
        GatedWeight(conv.weight, gate, dim=1)


def test_gate_penalty_and_a_gate_shared_by_two_convolutions() -> None:
    """Two convolutions whose outputs one gate scales (a channel group) are both drawn back on its largest entries;
    the ℓ1 penalty shrinks the gates."""
    torch.manual_seed(0)
    first, second, gate = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1), nn.Parameter(torch.tensor([1.0, 3.0, 2.0, 0.5]))
    x = torch.randn(2, 3, 5, 5)
    pairs = [GatedWeight(first.weight, gate), GatedWeight(second.weight, gate)]
    optimizer = CoGD([*first.parameters(), *second.parameters(), gate], pairs, lr=0.1, total_steps=2)
    weights_before = [first.weight.detach().clone(), second.weight.detach().clone()]
    loss = ((first(x) + second(x)) * gate.view(1, -1, 1, 1)).pow(2).mean() + gate_l1_penalty([gate], 0.5)
    loss.backward()
    assert gate_l1_penalty([gate], 0.5).item() == pytest.approx(0.5 * 6.5)
    sgd = [w - 0.1 * conv.weight.grad for w, conv in zip(weights_before, (first, second))]
    gate_sgd = gate.detach() - 0.1 * gate.grad
    optimizer.step()
    for before, stepped, conv in zip(weights_before, sgd, (first, second)):
        expected = stepped.clone()
        expected[1] = before[1] + 0.01 * (stepped[1] - before[1])  # α_1 = 1/4 of 4 channels: the largest gate
        torch.testing.assert_close(conv.weight.detach(), expected)
    torch.testing.assert_close(gate.detach(), gate_sgd)
    with pytest.raises(ValueError, match="at least one"):
        gate_l1_penalty([], 1.0)
