"""L∞ projected gradient descent (PGD) attack and adversarial training, for ABanditNAS's robustness objective.

PGD (Madry et al. 2018) maximises the loss within the ε-ball around x, from a random start:

    x⁰ = clip(x + U(−ε, ε)),    x^{t+1} = clip(Π_ε(x^t + α · sign(∇_x L(f(x^t), y))))

where Π_ε projects onto [x − ε, x + ε] and clip onto the data range [lo, hi]. Gradients are
taken with respect to the input only (the model's parameter gradients are left untouched), and
the model runs in whatever mode it is in. Binary layers differentiate their input through
their estimators, so the attack works on binarized networks as on float ones.

`AdversarialLoss` is the loss of adversarial training: the cross-entropy on PGD examples of
the batch, optionally mixed with the clean loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class PGD:
    """An L∞ PGD attack: `steps` signed-gradient steps of size `step_size` inside the `epsilon` ball."""

    epsilon: float
    steps: int = 7
    step_size: float | None = None  # default 2.5·ε / steps
    low: float = -1.0
    high: float = 1.0
    random_start: bool = True
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.epsilon < 0 or self.steps < 0:
            raise ValueError(f"PGD needs epsilon >= 0 and steps >= 0, got epsilon={self.epsilon}, steps={self.steps}")
        if self.low >= self.high:
            raise ValueError(f"PGD data range [{self.low}, {self.high}] is empty")
        self._generator = None if self.seed is None else torch.Generator().manual_seed(self.seed)

    @property
    def alpha(self) -> float:
        return self.step_size if self.step_size is not None else 2.5 * self.epsilon / max(self.steps, 1)

    def __call__(self, model: nn.Module, images: Tensor, labels: Tensor) -> Tensor:
        """Adversarial examples for (images, labels): within ε of `images` in L∞ and inside [low, high]."""
        clean = images.detach()
        adversarial = clean.clone()
        if self.random_start:
            noise = torch.rand(clean.shape, generator=self._generator, dtype=clean.dtype) * 2 - 1
            adversarial = adversarial + self.epsilon * noise
        adversarial = adversarial.clamp(self.low, self.high)
        for _ in range(self.steps):
            adversarial.requires_grad_(True)
            with torch.enable_grad():
                loss = F.cross_entropy(model(adversarial), labels)
                (gradient,) = torch.autograd.grad(loss, adversarial)
            step = adversarial.detach() + self.alpha * gradient.sign()
            adversarial = torch.min(torch.max(step, clean - self.epsilon), clean + self.epsilon)
            adversarial = adversarial.clamp(self.low, self.high)
        return adversarial.detach()


@dataclass
class AdversarialLoss:
    """Adversarial training loss: (1 − w)·CE(f(PGD(x)), y) + w·CE(f(x), y), `clean_weight` w in [0, 1]."""

    model: nn.Module
    attack: PGD
    clean_weight: float = 0.0

    def __call__(self, images: Tensor, labels: Tensor) -> Tensor:
        adversarial = self.attack(self.model, images, labels)
        loss = F.cross_entropy(self.model(adversarial), labels)
        if self.clean_weight:
            loss = (1 - self.clean_weight) * loss + self.clean_weight * F.cross_entropy(self.model(images), labels)
        return loss


def robust_accuracy(model: nn.Module, batches: list[tuple[Tensor, Tensor]], attack: PGD) -> float:
    """Top-1 accuracy of `model` on PGD examples of `batches`."""
    correct = total = 0
    for images, labels in batches:
        adversarial = attack(model, images, labels)
        with torch.no_grad():
            correct += int((model(adversarial).argmax(1) == labels).sum())
        total += len(labels)
    return correct / total
