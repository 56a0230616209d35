"""The IR-module protocol: what a module in a bitfx graph may offer beyond `forward`, and how bitfx asks.

The modules passes put into a graph (binary layers, quantizers, estimators, ...) are ordinary
`nn.Module`s. Everything else bitfx needs from them is an optional hook declared here, each
with one accessor; the rest of bitfx calls the accessor, never the attribute name.

| hook                                     | declared by           | asked by           | accessor                |
|------------------------------------------|-----------------------|--------------------|-------------------------|
| `bitfx_leaf = True`                      | `Leaf`                | `bitfx.ir.capture` | `is_leaf`               |
| `bitfx_storage_bits = {"weight": 1}`     | `DeclaresStorageBits` | `bitfx.ir.cost`    | `storage_bits`          |
| `bitfx_macs(output_shape)`               | `DeclaresMacs`        | `bitfx.ir.cost`    | `declared_macs`         |
| `deployed()`                             | `Deployable`          | `bitfx.ir.deploy`  | `deployed_form`         |
| `deployed_input()`, `estimator`          | `ActivationQuantizer` | binary layers      | `deployed_input`        |
| `on_epoch_start`, `after_optimizer_step` | `TrainingHooks`       | `bitfx.train`      | `training_hook_modules` |
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import ClassVar, Protocol, runtime_checkable

from torch import nn


@runtime_checkable
class Leaf(Protocol):
    """A module that capture keeps as one `call_module` node instead of tracing through it.

    Asked by the tracer of `bitfx.ir.capture` for every module it meets. Every module a pass
    introduces sets it, so a rewritten graph captures again to the same graph and its lowering
    sees the module whole."""

    bitfx_leaf: ClassVar[bool]


@runtime_checkable
class DeclaresStorageBits(Protocol):
    """A module that stores some of its tensors at another width than their dtype's.

    `bitfx_storage_bits` maps a parameter or buffer name to its width in bits per element in a
    deployed file (a binary layer: `{"weight": 1}`; a k-bit quantized layer: `{"weight": k}`).
    Read by `bitfx.ir.cost` when it counts weight storage; tensors not named count at their
    dtype's width."""

    bitfx_storage_bits: Mapping[str, int]


@runtime_checkable
class DeclaresMacs(Protocol):
    """A module whose multiply-accumulates are not those of a float conv or linear layer."""

    def bitfx_macs(self, output_shape: tuple[int, ...]) -> int:
        """MACs per sample of one call whose output has `output_shape` (batch first).

        Called by `bitfx.ir.cost` for every `call_module` node once shapes are known; must
        return an int ≥ 0 (a binary layer returns its binary MACs)."""
        ...


@runtime_checkable
class Deployable(Protocol):
    """A trainable module that deploys as another, fixed module (its deployment form)."""

    def deployed(self) -> nn.Module:
        """A new module that computes what this one computes in eval mode from fixed tensors
        (buffers, no parameters), for example sign(W), scale and bias of a binary layer.

        Called by `bitfx.ir.deploy.deployed` on a copy of the graph before every lowering, and
        by binary layers' own forward outside training. Must not modify this module, and must
        not share tensors with it (the result is exported or cached while this one trains on)."""
        ...


@runtime_checkable
class ActivationQuantizer(Protocol):
    """The input quantizer of a binary layer: x → ±1 in training, and what deployment keeps.

    `forward` gives training ±1 activations with the estimator's backward. `estimator` (optional)
    is that backward's module; a pass may replace it (the RBNN pass swaps in its training-aware
    sign)."""

    def deployed_input(self) -> nn.Module | None:
        """The module of standard ops the deployed layer applies to x before the op's own sign
        (RSign: x − β per channel), or None for a plain sign. Called by a binary layer's
        `deployed()`; must return a new module holding copies of any tensors it needs."""
        ...


class TrainingHooks:
    """Base of modules with a per-epoch schedule or a per-step constraint; both hooks are optional.

    Some layers follow a schedule over the epochs (IR-Net's EDE sharpens its t and k; RBNN's
    rotations update once per epoch) or keep a constraint on their parameters (BNN clips latent
    weights to [−1, 1] after every step). Subclassing is the registration:
    `bitfx.train.on_epoch_start` and `bitfx.train.after_optimizer_step` call the hooks of every
    module of a model that subclasses this."""

    def on_epoch_start(self, epoch: int, epochs: int) -> dict[str, float]:
        """Set the schedule for epoch `epoch` (0-based) of `epochs`; return the new values for logging."""
        return {}

    def after_optimizer_step(self) -> None:
        """Re-impose a constraint on the parameters after an optimizer step."""


def is_leaf(module: nn.Module) -> bool:
    """Whether capture keeps `module` as one node (`Leaf`)."""
    return bool(getattr(module, "bitfx_leaf", False))


def storage_bits(module: nn.Module, name: str) -> int | None:
    """The width in bits per element that `module` declares for its tensor `name`
    (`DeclaresStorageBits`), or None when it keeps that tensor at its dtype's width."""
    return getattr(module, "bitfx_storage_bits", {}).get(name)


def declared_macs(module: nn.Module, output_shape: tuple[int, ...]) -> int | None:
    """MACs per sample that `module` declares for a call with this output shape (`DeclaresMacs`),
    or None when it declares none and the caller counts them by layer type."""
    hook = getattr(module, "bitfx_macs", None)
    return hook(output_shape) if callable(hook) else None


def has_deployed_form(module: nn.Module) -> bool:
    """Whether `module` deploys as another module (`Deployable`)."""
    return callable(getattr(module, "deployed", None))


def deployed_form(module: nn.Module) -> nn.Module | None:
    """The fixed module `module` deploys as, in `module`'s training mode; None when it has none."""
    if not has_deployed_form(module):
        return None
    return module.deployed().train(module.training)


def deployed_input(quantizer: nn.Module) -> nn.Module | None:
    """What a deployed binary layer applies to x before its sign, for this activation quantizer."""
    hook = getattr(quantizer, "deployed_input", None)
    if not callable(hook):
        raise TypeError(
            f"{type(quantizer).__name__} is used as the activation quantizer of a binary layer but has no "
            "deployed_input(); define it to return the module applied to x before the sign (None for a plain sign)"
        )
    return hook()


def sign_estimator(quantizer: nn.Module | None) -> nn.Module | None:
    """The estimator (backward of sign) of an activation quantizer, or None when it has none."""
    return getattr(quantizer, "estimator", None)


def training_hook_modules(model: nn.Module) -> Iterator[tuple[str, TrainingHooks]]:
    """Every module of `model` with training hooks, with its qualified name, in `named_modules` order."""
    for name, module in model.named_modules():
        if isinstance(module, TrainingHooks):
            yield name, module
