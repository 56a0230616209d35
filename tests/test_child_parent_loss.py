"""`bitfx.train.ChildParentLoss`: CP-NAS's kernel-level loss between a binarized child and its float parent."""

from __future__ import annotations

import pytest
import torch
from torch import fx, nn

from bitfx.ir import capture
from bitfx.ir.binary import BinaryLayer, RotatedBinaryConv2d, available_schemes
from bitfx.passes import Pipeline
from bitfx.train import ChildParentLoss


def _parent() -> fx.GraphModule:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Flatten(), nn.Linear(8 * 8 * 8, 16), nn.ReLU(), nn.Linear(16, 4),
    )  # fmt: skip
    return capture(model.eval(), torch.randn(1, 3, 8, 8))


def _child(parent: fx.GraphModule, spec: str = "binarize") -> fx.GraphModule:
    torch.manual_seed(1)
    child = Pipeline.from_spec(spec).run(parent).graph_module
    with torch.no_grad():
        for module in child.modules():
            if isinstance(module, BinaryLayer):
                module.weight.add_(0.05 * torch.randn_like(module.weight))
    return child.train()


def test_value_is_the_hand_computed_xnor_kernel_distance() -> None:
    parent = _parent()
    child = _child(parent)
    loss = ChildParentLoss(parent, child, weight=0.5)
    assert loss.paired == ["3", "6", "10"]
    assert set(loss.unpaired) == set()
    expected = 0.0
    for name in loss.paired:
        latent, float_kernel = child.get_submodule(name).weight.detach(), parent.get_submodule(name).weight.detach()
        alpha = latent.abs().flatten(1).mean(dim=1).view(-1, *[1] * (latent.dim() - 1))
        expected += (float_kernel - alpha * torch.sign(latent)).pow(2).mean().item()
    assert loss().item() == pytest.approx(0.5 * expected, rel=1e-6)
    assert 0.5 * sum(loss.kernel_errors().values()) == pytest.approx(loss().item(), rel=1e-6)


def test_zero_when_the_parent_kernels_are_the_quantized_child_kernels() -> None:
    parent = _parent()
    child = _child(parent)
    with torch.no_grad():
        for name in ("3", "6", "10"):
            layer = child.get_submodule(name)
            parent.get_submodule(name).weight.copy_(layer.weight_quantizer(layer.weight))
    assert ChildParentLoss(parent, child)().item() == 0.0


@pytest.mark.parametrize("spec", [f"binarize(scheme={name})" for name in available_schemes()] + ["binarize,rotate"])
def test_every_scheme_pairs_and_trains_the_latent_weights(spec: str) -> None:
    parent = _parent()
    child = _child(parent, spec)
    loss = ChildParentLoss(parent, child, weight=1.0)
    assert loss.paired == ["3", "6", "10"]
    assert isinstance(child.get_submodule("3"), RotatedBinaryConv2d) == ("rotate" in spec)
    value = loss()
    assert torch.isfinite(value) and value.item() > 0
    value.backward()
    for name in loss.paired:
        layer = child.get_submodule(name)
        # RBNN's rotated weight is detached and starts fully rotated (θ = π/2): the gradient reaches
        # its angle and scale, not the latent weight, exactly as in the layer's own training.
        trained = layer.weight_quantizer.parameters() if isinstance(layer, RotatedBinaryConv2d) else [layer.weight]
        assert sum(p.grad.abs().sum() for p in trained) > 0, name
        assert parent.get_submodule(name).weight.grad is None


def test_the_gradient_goes_through_the_layers_own_estimator() -> None:
    """BNN's clipped straight-through estimator passes no gradient to latent weights outside [−1, 1]."""
    parent = _parent()
    child = _child(parent, "binarize(scheme=bnn)")
    layer = child.get_submodule("6")
    with torch.no_grad():
        layer.weight[0].fill_(1.5)
    ChildParentLoss(parent, child)().backward()
    assert layer.weight.grad[0].abs().sum() == 0
    assert layer.weight.grad[1:].abs().sum() > 0


def test_layers_without_a_float_counterpart_are_reported_and_no_pair_is_an_error() -> None:
    parent = _parent()
    child = _child(parent)
    other = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Identity(), nn.Identity(), nn.Conv2d(8, 4, 1))
    reasons = r"no binary layer of the child pairs.*3: kernel shapes differ.*6: no module of that name"
    with pytest.raises(ValueError, match=reasons):
        ChildParentLoss(other, child)
    with pytest.raises(ValueError, match="it has no binary layers"):
        ChildParentLoss(parent, parent)
    partial = _parent()
    partial.add_module("6", nn.Identity())
    loss = ChildParentLoss(partial, child)
    assert loss.paired == ["3", "10"]
    assert loss.unpaired == {"6": "the parent's module is a Identity, not a float Conv2d or Linear"}
