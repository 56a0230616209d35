"""Backward estimators of sign: the derivative training uses in place of sign's (zero) one.

| name          | derivative at x                        | used by                          |
|---------------|----------------------------------------|----------------------------------|
| `ste`         | 1                                      | DoReFa-Net (identity STE)        |
| `clipped_ste` | 1 where \\|x\\| ≤ 1, else 0            | BNN, XNOR-Net, Bi-Real weights   |
| `approx_sign` | 2 − 2\\|x\\| where \\|x\\| < 1, else 0 | Bi-Real / ReActNet activations   |
| `ede`         | k·t·(1 − tanh²(t·x)), t and k scheduled| IR-Net                           |
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from bitfx.ir.protocol import TrainingHooks


class Estimator(nn.Module):
    """A backward estimator of sign; `derivative(x)` is d sign(x)/dx as training sees it."""

    name = "estimator"

    def derivative(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return self.name


class IdentitySTE(Estimator):
    """Straight-through estimator: the gradient passes unchanged (Bengio et al. 2013; DoReFa-Net)."""

    name = "ste"

    def derivative(self, x: Tensor) -> Tensor:
        return torch.ones_like(x)


class ClippedSTE(Estimator):
    """Straight-through inside [−1, 1], zero outside: the derivative of hardtanh (Hubara et al. 2016)."""

    name = "clipped_ste"

    def derivative(self, x: Tensor) -> Tensor:
        return (x.abs() <= 1).to(x.dtype)


class ApproxSign(Estimator):
    """Bi-Real Net's piecewise-polynomial estimator: 2 + 2x on [−1, 0), 2 − 2x on [0, 1), else 0
    (Liu et al., ECCV 2018)."""

    name = "approx_sign"

    def derivative(self, x: Tensor) -> Tensor:
        return (2 - 2 * x.abs()).clamp(min=0)


class EDE(Estimator, TrainingHooks):
    """IR-Net's Error Decay Estimator k·t·(1 − tanh²(t·x)) (Qin et al., CVPR 2020).

    t grows log-linearly from `t_min` to `t_max` over training and k = max(1/t, 1): early on
    the estimator is the identity STE (k·t = 1 and tanh is flat), at the end close to sign's
    own derivative. `on_epoch_start(e, E)` sets t = 10^(log10 t_min + (log10 t_max − log10 t_min)·e/E).
    """

    name = "ede"

    def __init__(self, t_min: float = 1e-3, t_max: float = 10.0) -> None:
        super().__init__()
        if not 0 < t_min <= t_max:
            raise ValueError(f"EDE needs 0 < t_min ≤ t_max, got t_min={t_min}, t_max={t_max}")
        self.t_min, self.t_max = t_min, t_max
        self.t, self.k = t_min, max(1 / t_min, 1.0)

    def derivative(self, x: Tensor) -> Tensor:
        return self.k * self.t * (1 - torch.tanh(self.t * x) ** 2)

    def on_epoch_start(self, epoch: int, epochs: int) -> dict[str, float]:
        low, high = math.log10(self.t_min), math.log10(self.t_max)
        self.t = 10 ** (low + (high - low) * epoch / epochs)
        self.k = max(1 / self.t, 1.0)
        return {"t": self.t, "k": self.k}

    def extra_repr(self) -> str:
        return f"ede, t={self.t:.3g}, k={self.k:.3g}"


ESTIMATORS: dict[str, type[Estimator]] = {cls.name: cls for cls in (IdentitySTE, ClippedSTE, ApproxSign, EDE)}
