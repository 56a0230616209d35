"""The ℓ1 penalty that drives channel gates to zero during gated training (GAL/CoGD-style pruning):
channels whose gate reaches zero carry nothing and can be removed.

    penalty = weight · Σ_g ‖g‖₁

Add it to the task loss; train the gates with plain SGD or with `bitfx.train.CoGD`, pairing each
gate with the weights of every convolution whose output channels it scales (one `GatedWeight`
per convolution, `dim=0`; convolutions that share a channel group share the gate).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor


def gate_l1_penalty(gates: Iterable[Tensor], weight: float) -> Tensor:
    """weight · Σ |g| over every entry of every gate tensor."""
    if weight < 0:
        raise ValueError(f"the gate penalty weight must be ≥ 0, got {weight}")
    gates = list(gates)
    if not gates:
        raise ValueError("gate_l1_penalty needs at least one gate tensor")
    return weight * torch.stack([gate.abs().sum() for gate in gates]).sum()
