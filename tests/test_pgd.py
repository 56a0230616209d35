"""The L∞ PGD attack and adversarial training helpers (bitfx.train.pgd)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bitfx.ir import capture
from bitfx.passes import Pipeline
from bitfx.train import PGD, AdversarialLoss, robust_accuracy


def _data(seed=0):
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(64, 1, 4, 4, generator=generator) * 2 - 1
    labels = (images[:, 0, :2].mean(dim=(1, 2)) > images[:, 0, 2:].mean(dim=(1, 2))).long()
    return images, labels


def _trained_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2))
    images, labels = _data()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(100):
        optimizer.zero_grad()
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()
    optimizer.zero_grad()
    return model.eval()


def test_pgd_raises_the_loss_more_than_random_noise_of_the_same_size():
    model = _trained_model()
    images, labels = _data(1)
    attack = PGD(0.1, steps=10, seed=0)
    adversarial = attack(model, images, labels)
    noise = (images + 0.1 * torch.sign(torch.randn(images.shape, generator=torch.Generator().manual_seed(2)))).clamp(
        -1, 1
    )
    with torch.no_grad():
        clean, noisy, attacked = (F.cross_entropy(model(x), labels).item() for x in (images, noise, adversarial))
    assert attacked > 2 * clean and attacked > noisy
    assert robust_accuracy(model, [(images, labels)], attack) < (model(images).argmax(1) == labels).float().mean()


def test_pgd_stays_in_the_epsilon_ball_and_the_data_range():
    model = _trained_model()
    images, labels = _data(1)
    adversarial = PGD(0.3, steps=5, step_size=0.2, seed=0)(model, images, labels)
    assert (adversarial - images).abs().max() <= 0.3 + 1e-6
    assert adversarial.min() >= -1 and adversarial.max() <= 1
    assert (adversarial - images).abs().max() > 0.25  # the attack uses the ball (step 0.2 × 5 would leave it)
    assert not adversarial.requires_grad
    assert all(p.grad is None for p in model.parameters())  # gradients are taken for the input only


def test_without_budget_the_attack_changes_nothing():
    model = _trained_model()
    images, labels = _data(1)
    assert torch.equal(PGD(0.0, steps=3, seed=0)(model, images, labels), images)
    assert torch.equal(PGD(0.5, steps=0, random_start=False)(model, images, labels), images)
    with pytest.raises(ValueError, match="epsilon"):
        PGD(-0.1)
    with pytest.raises(ValueError, match="empty"):
        PGD(0.1, low=1.0, high=-1.0)


def test_pgd_attacks_a_binarized_network_through_its_estimators():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Conv2d(8, 8, 3, padding=1), nn.Flatten(),
                          nn.Linear(128, 2))  # fmt: skip
    images, labels = _data()
    binary = Pipeline.from_spec("binarize").run(capture(model, images)).graph_module
    optimizer = torch.optim.Adam(binary.parameters(), lr=0.01)
    loss_fn = AdversarialLoss(binary, PGD(0.05, steps=2, seed=0), clean_weight=0.5)
    binary.train()
    for _ in range(20):
        optimizer.zero_grad()
        loss_fn(images, labels).backward()
        optimizer.step()
    binary.eval()
    test_images, test_labels = _data(1)
    with torch.no_grad():
        clean = F.cross_entropy(binary(test_images), test_labels).item()
    adversarial = PGD(0.2, steps=10, seed=0)(binary, test_images, test_labels)
    with torch.no_grad():
        assert F.cross_entropy(binary(adversarial), test_labels).item() > clean
