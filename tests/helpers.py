"""Helpers shared by tests."""

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial running statistics and affine parameters."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, _BatchNorm) and module.running_mean is not None:
                shape = module.running_mean.shape
                module.running_mean.copy_(torch.randn(shape, generator=generator) * 0.5)
                module.running_var.copy_(torch.rand(shape, generator=generator) * 1.5 + 0.5)
                if module.affine:
                    module.weight.copy_(torch.randn(shape, generator=generator))
                    module.bias.copy_(torch.randn(shape, generator=generator) * 0.5)
    return model


def state_snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A deep copy of every parameter and buffer, to prove a model was left unchanged."""
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def assert_same_state(model: nn.Module, snapshot: dict[str, torch.Tensor]) -> None:
    state = model.state_dict()
    assert set(state) == set(snapshot)
    for name, value in snapshot.items():
        assert torch.equal(state[name], value), f"{name} changed"
