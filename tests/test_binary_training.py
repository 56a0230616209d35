"""Training binarized graphs: hooks, distillation from the float model, and a short run that learns."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from bitfx.ir import capture
from bitfx.passes import Pipeline
from bitfx.train import Distillation, after_optimizer_step, on_epoch_start
from bitfx.zoo import digits
from examples.training import accuracy


def small_cnn() -> nn.Sequential:
    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(
        *block(1, 32),
        *block(32, 64),
        nn.MaxPool2d(2),
        *block(64, 64),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, 10),
    )


def fit(model: nn.Module, batches, epochs: int, lr: float, loss_fn=None) -> None:
    """Adam with the bitfx hooks, as docs/binarization.md shows."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for epoch in range(epochs):
        on_epoch_start(model, epoch, epochs)
        for images, labels in batches:
            optimizer.zero_grad()
            loss = loss_fn(images, labels) if loss_fn else nn.functional.cross_entropy(model(images), labels)
            loss.backward()
            optimizer.step()
            after_optimizer_step(model)
    model.eval()


@pytest.fixture(scope="module")
def digits_8x8():
    shape = (1, 1, 8, 8)
    return digits(shape, split="train", batch_size=32), digits(shape, split="test", batch_size=360)


@pytest.fixture(scope="module")
def float_teacher(digits_8x8):
    train, _ = digits_8x8
    torch.manual_seed(0)
    model = small_cnn()
    fit(model, train, epochs=2, lr=3e-3)
    return capture(model, train[0][0][:4])


@pytest.mark.parametrize("scheme", ["xnor", "irnet"])
def test_a_binarized_cnn_learns_the_digits(scheme: str, digits_8x8, float_teacher) -> None:
    train, test = digits_8x8
    torch.manual_seed(0)
    student = Pipeline.from_spec(f"binarize(scheme={scheme})").run(float_teacher).graph_module
    before = accuracy(student, test)
    fit(student, train, epochs=3, lr=3e-3, loss_fn=Distillation(float_teacher, student, label_weight=1.0))
    after = accuracy(student, test)
    assert before < 0.35 and after > 0.75, (before, after)  # chance is 0.10


def test_distillation_loss(digits_8x8, float_teacher) -> None:
    images, labels = digits_8x8[0][0]
    same = Distillation(float_teacher, copy.deepcopy(float_teacher).eval())
    assert same(images).item() == pytest.approx(0.0, abs=1e-6)

    student = Pipeline.from_spec("binarize").run(float_teacher).graph_module.train()
    for parameter in float_teacher.parameters():
        parameter.grad = None
    distill = Distillation(
        float_teacher, student, temperature=2.0, label_weight=0.5, feature_weight=1.0, features=["_6"]
    )
    loss = distill(images, labels)
    assert loss.item() > 0
    loss.backward()
    assert all(p.grad is None for p in float_teacher.parameters())
    assert student.get_submodule("3").weight.grad is not None


def test_distillation_errors(float_teacher) -> None:
    with pytest.raises(ValueError, match="no nodes named"):
        Distillation(float_teacher, float_teacher, feature_weight=1.0, features=["nope"])
    with pytest.raises(ValueError, match="GraphModules"):
        Distillation(nn.Linear(2, 2), nn.Linear(2, 2), features=["x"])
    with pytest.raises(ValueError, match="labels"):
        Distillation(float_teacher, float_teacher, label_weight=1.0)(torch.zeros(2, 1, 8, 8))
