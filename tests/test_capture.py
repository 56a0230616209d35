import pytest
import torch
from helpers import assert_same_state, state_snapshot
from torch import nn

from bitfx import zoo
from bitfx.errors import CaptureError
from bitfx.ir import capture, node_dtype, node_shape


@pytest.mark.parametrize("name", zoo.MODELS)
def test_every_node_of_every_example_model_has_shape_and_dtype(name):
    model = getattr(zoo, name)()
    x = torch.randn(2, *model.example_input_shape[1:])
    gm = capture(model, x)
    for node in gm.graph.nodes:
        assert node_shape(node) is not None, node.name
        assert node_dtype(node) is not None, node.name
    output = next(n for n in gm.graph.nodes if n.op == "output")
    with torch.no_grad():
        assert node_shape(output) == tuple(model.eval()(x).shape)


def test_capture_leaves_the_model_unchanged_even_in_train_mode():
    model = zoo.resnet20().train()
    snapshot = state_snapshot(model)
    capture(model, torch.randn(4, 3, 32, 32))
    assert model.training and all(m.training for m in model.modules())
    assert_same_state(model, snapshot)


class CountsCalls(nn.Module):
    """Train mode with a BatchNorm, a buffer counter and a running average updated in forward."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))
        self.register_buffer("ema", torch.zeros(4))

    def forward(self, x):
        self.calls.add_(1)
        y = self.bn(self.conv(x))
        self.ema.mul_(0.9).add_(y.mean((0, 2, 3)).detach() * 0.1)
        return y


def test_capture_does_not_run_forward_side_effects_on_the_models_buffers():
    model = CountsCalls().train()
    snapshot = state_snapshot(model)
    buffers = dict(model.named_buffers())
    capture(model, torch.randn(4, 3, 8, 8))
    assert_same_state(model, snapshot)
    assert all(buffers[name] is value for name, value in model.named_buffers())
    assert model.training


class DataDependent(nn.Module):
    def forward(self, x):
        if x.sum() > 0:
            return x * 2
        return x


class Iterates(nn.Module):
    def forward(self, x):
        return sum(row for row in x)


class UsesLen(nn.Module):
    def forward(self, x):
        return x * len(x)


class Wrapper(nn.Module):
    def __init__(self, inner: nn.Module):
        super().__init__()
        self.stem = nn.Conv2d(3, 3, 1)
        self.body = nn.Sequential(nn.ReLU(), inner)

    def forward(self, x):
        return self.body(self.stem(x))


@pytest.mark.parametrize(
    "inner, construct",
    [
        (DataDependent(), "data-dependent control flow"),
        (Iterates(), "iterating a traced tensor"),
        (UsesLen(), "`len()`"),
    ],
)
def test_untraceable_model_error_names_module_construct_and_fix(inner, construct):
    with pytest.raises(CaptureError) as info:
        capture(Wrapper(inner), torch.randn(1, 3, 4, 4))
    message = str(info.value)
    assert "module 'body.1'" in message
    assert type(inner).__name__ in message
    assert construct in message
    assert "leaf_modules=['body.1']" in message and "concrete_args" in message
    assert "test_capture.py" in message  # the user's line


@pytest.mark.parametrize("leaf", ["body.1", DataDependent])
def test_leaf_modules_by_name_or_type_make_it_traceable(leaf):
    model = Wrapper(DataDependent())
    gm = capture(model, torch.randn(1, 3, 4, 4), leaf_modules=[leaf])
    targets = [n.target for n in gm.graph.nodes if n.op == "call_module"]
    assert "body.1" in targets
    x = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(gm(x), model(x))


class Flagged(nn.Module):
    def forward(self, x, double: bool = False):
        return x * 2 if double else x


def test_concrete_args_fix_a_non_tensor_argument():
    gm = capture(Flagged(), torch.ones(2), concrete_args={"double": True})
    torch.testing.assert_close(gm(torch.ones(2)), torch.full((2,), 2.0))


def test_unknown_leaf_name_and_non_tensor_input_are_clear_errors():
    with pytest.raises(CaptureError, match="'bodyy.1', which is not a submodule"):
        capture(Wrapper(DataDependent()), torch.randn(1, 3, 4, 4), leaf_modules=["bodyy.1"])
    with pytest.raises(CaptureError, match="model input 1 is a int.*concrete_args"):
        capture(Flagged(), (torch.ones(2), 3))


def test_wrong_example_shape_is_a_clear_error():
    with pytest.raises(CaptureError, match=r"node 'conv1'.*\[\(1, 5, 32, 32\)\].*3 channels.*shape and dtype"):
        capture(zoo.resnet20(), torch.randn(1, 5, 32, 32))


def test_failure_in_the_root_forward_suggests_concrete_args_or_a_submodule():
    with pytest.raises(CaptureError) as info:
        capture(DataDependent(), torch.randn(1, 3))
    message = str(info.value)
    assert "module '<root>' (DataDependent)" in message and "data-dependent control flow" in message
    assert "concrete_args" in message and "move the construct into a submodule" in message
