"""sign with sign(0) = +1, and sign with a chosen backward estimator for training."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from bitfx.ir.binary.estimators import Estimator


def binary_sign(x: Tensor) -> Tensor:
    """+1 where x ≥ 0 (also −0.0 and NaN), −1 where x < 0, in x's dtype (torch.sign gives 0 at 0)."""
    return torch.where(x < 0, -1.0, 1.0).to(x.dtype)


class _SignWithEstimator(torch.autograd.Function):
    """Forward: `binary_sign(x)`. Backward: the incoming gradient times `estimator.derivative(x)`."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, estimator: Estimator) -> Tensor:
        ctx.save_for_backward(x)
        ctx.estimator = estimator
        return binary_sign(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (x,) = ctx.saved_tensors
        return grad * ctx.estimator.derivative(x), None


class _StraightThrough(torch.autograd.Function):
    """Forward: `value`. Backward: the gradient of `value` goes to `source`, times the estimator's
    derivative at `source` (Bi-Real's clamp trick: the scale in `value` gets no gradient)."""

    @staticmethod
    def forward(ctx: Any, value: Tensor, source: Tensor, estimator: Estimator) -> Tensor:
        ctx.save_for_backward(source)
        ctx.estimator = estimator
        return value.detach().clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[None, Tensor, None]:
        (source,) = ctx.saved_tensors
        return None, grad * ctx.estimator.derivative(source), None


def sign_with(x: Tensor, estimator: Estimator) -> Tensor:
    """`binary_sign(x)` whose gradient is `estimator.derivative(x)` (straight-through style)."""
    return _SignWithEstimator.apply(x, estimator)


def straight_through(value: Tensor, source: Tensor, estimator: Estimator) -> Tensor:
    """`value` in the forward pass; in the backward pass its gradient flows to `source` only,
    multiplied by `estimator.derivative(source)`."""
    return _StraightThrough.apply(value, source, estimator)
