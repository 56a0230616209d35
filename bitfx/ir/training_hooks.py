"""`TrainingHooks`: how an IR module takes part in training beyond its forward pass.

Some layers that passes introduce follow a schedule over the epochs (IR-Net's EDE estimator
sharpens its t and k; RBNN's rotations update once per epoch) or keep a constraint on their
parameters (BNN clips latent weights to [−1, 1] after every step). Such a module subclasses
`TrainingHooks`, and subclassing is the registration: `bitfx.train.on_epoch_start` and
`bitfx.train.after_optimizer_step` call the hooks of every module of a model that has them.
"""

from __future__ import annotations


class TrainingHooks:
    """Mixin for modules with a per-epoch schedule or a per-step constraint; both hooks are optional."""

    def on_epoch_start(self, epoch: int, epochs: int) -> dict[str, float]:
        """Set the schedule for epoch `epoch` (0-based) of `epochs`; return the new values for logging."""
        return {}

    def after_optimizer_step(self) -> None:
        """Re-impose a constraint on the parameters after an optimizer step."""
