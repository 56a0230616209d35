"""Optimizer parameter groups for PAMS training: the learnable α of every activation
quantizer in its own group (PAMS: Adam, lr 1e-2, no weight decay), everything else apart."""

from __future__ import annotations

from typing import Any

from torch import nn

from bitfx.ir.quant import ActQuant

ALPHA_LR = 1e-2


def pams_parameter_groups(
    model: nn.Module, lr: float, *, alpha_lr: float = ALPHA_LR, weight_decay: float = 0.0
) -> list[dict[str, Any]]:
    """`[{weights, lr, weight_decay}, {alphas, alpha_lr, no weight decay}]` for a torch optimizer."""
    alphas = [m.alpha for m in model.modules() if isinstance(m, ActQuant)]
    alpha_ids = {id(a) for a in alphas}
    others = [p for p in model.parameters() if id(p) not in alpha_ids and p.requires_grad]
    return [
        {"params": others, "lr": lr, "weight_decay": weight_decay},
        {"params": alphas, "lr": alpha_lr, "weight_decay": 0.0},
    ]
