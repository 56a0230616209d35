"""The training loop and accuracy shared by the example scripts."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from bitfx.train import after_optimizer_step, on_epoch_start

Loss = Callable[[Tensor, Tensor], Tensor]


def train_epochs(
    model: nn.Module,
    batches: Sequence[tuple[Tensor, Tensor]],
    loss_fn: Loss,
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int,
    desc: str = "train",
) -> list[dict[str, dict[str, float]]]:
    """Train `model` in place with a cosine schedule and the `bitfx.train` hooks (schedules at
    each epoch start, constraints after each step; no-ops for float models).

    Returns what `on_epoch_start` reported at each epoch, and leaves the model in eval mode.
    """
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * len(batches))
    model.train()
    reported = []
    for epoch in tqdm(range(epochs), desc=desc, unit="epoch", leave=False):
        reported.append(on_epoch_start(model, epoch, epochs))
        for images, labels in batches:
            optimizer.zero_grad()
            loss_fn(images, labels).backward()
            optimizer.step()
            schedule.step()
            after_optimizer_step(model)
    model.eval()
    return reported


def train_classifier(
    model: nn.Module, batches: Sequence[tuple[Tensor, Tensor]], *, epochs: int, lr: float = 0.05, seed: int = 0
) -> nn.Module:
    """SGD with momentum and a cosine schedule, cross-entropy loss; trains `model` in place."""
    torch.manual_seed(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    train_epochs(
        model,
        batches,
        lambda images, labels: nn.functional.cross_entropy(model(images), labels),
        optimizer,
        epochs=epochs,
    )
    return model


def accuracy(predict: Callable[[Tensor], Tensor | np.ndarray], batches: Sequence[tuple[Tensor, Tensor]]) -> float:
    """Top-1 accuracy of `predict` (a torch module or any function returning logits)."""
    correct = total = 0
    with torch.no_grad():
        for images, labels in batches:
            logits = torch.as_tensor(predict(images))
            correct += int((logits.argmax(dim=1) == labels).sum())
            total += len(labels)
    return correct / total
