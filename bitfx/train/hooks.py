"""The training hooks of IR modules, called over a whole model (see `bitfx.ir.protocol.TrainingHooks`).

An ordinary PyTorch loop trains a rewritten GraphModule; it calls these two functions:

    for epoch in range(epochs):
        bitfx.train.on_epoch_start(gm, epoch, epochs)      # schedules: EDE's t and k, RBNN's rotations
        for x, y in batches:
            optimizer.zero_grad(); loss(gm(x), y).backward(); optimizer.step()
            bitfx.train.after_optimizer_step(gm)           # constraints: BNN's latent clipping
"""

from __future__ import annotations

from torch import nn

from bitfx.errors import BitfxError
from bitfx.ir.distributed import check_same_model
from bitfx.ir.protocol import training_hook_modules


def on_epoch_start(model: nn.Module, epoch: int, epochs: int) -> dict[str, dict[str, float]]:
    """Advance every scheduled module of `model` to epoch `epoch` (0-based) of `epochs`.

    Returns the values each module set, by qualified module name (empty for a model without
    schedules). Under torch.distributed it is a collective: call it on every rank; it first
    checks that every rank holds the same model (see `bitfx.ir.distributed`)."""
    if epochs <= 0 or not 0 <= epoch < epochs:
        raise ValueError(f"on_epoch_start: epoch must satisfy 0 ≤ epoch < epochs, got epoch={epoch}, epochs={epochs}")
    check_same_model(model, BitfxError, "on_epoch_start")
    values = {}
    for name, module in training_hook_modules(model):
        set_values = module.on_epoch_start(epoch, epochs)
        if set_values:
            values[name] = set_values
    return values


def after_optimizer_step(model: nn.Module) -> None:
    """Re-impose every module's parameter constraint after an optimizer step."""
    for _, module in training_hook_modules(model):
        module.after_optimizer_step()
