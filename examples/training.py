"""A plain classification training loop and accuracy, shared by the example scripts."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm


def train_classifier(model: nn.Module, batches: Sequence[tuple[Tensor, Tensor]], *, epochs: int, lr: float = 0.05, seed: int = 0) -> nn.Module:
    """SGD with momentum and a cosine schedule, cross-entropy loss; trains `model` in place."""
    torch.manual_seed(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * len(batches))
    model.train()
    for _ in tqdm(range(epochs), desc="train", unit="epoch", leave=False):
        for images, labels in batches:
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(images), labels).backward()
            optimizer.step()
            schedule.step()
    return model.eval()


def accuracy(predict: Callable[[Tensor], Tensor | np.ndarray], batches: Sequence[tuple[Tensor, Tensor]]) -> float:
    """Top-1 accuracy of `predict` (a torch module or any function returning logits)."""
    correct = total = 0
    with torch.no_grad():
        for images, labels in batches:
            logits = torch.as_tensor(predict(images))
            correct += int((logits.argmax(dim=1) == labels).sum())
            total += len(labels)
    return correct / total
