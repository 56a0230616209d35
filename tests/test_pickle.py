"""Plain pickling of captured and rewritten graphs: `pickle` and `torch.save`/`torch.load`."""

import io
import pickle

import pytest
import torch
from torch import fx, nn

from bitfx.ir import capture
from bitfx.passes import Pipeline
from tests.helpers import randomize_batchnorm


def small_cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    )


def _graph(spec: str) -> tuple[fx.GraphModule, torch.Tensor]:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 16, 16)
    gm = capture(randomize_batchnorm(small_cnn()).eval(), (x,))
    if spec:
        gm = Pipeline.from_spec(spec).run(gm).graph_module
    return gm.eval(), x


def _via_torch_save(gm: fx.GraphModule) -> fx.GraphModule:
    buffer = io.BytesIO()
    torch.save(gm, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


@pytest.mark.parametrize("spec", ["", "fuse_bn", "binarize", "binarize,rotate(seed=3)"])
@pytest.mark.parametrize(
    "round_trip", [lambda gm: pickle.loads(pickle.dumps(gm)), _via_torch_save], ids=["pickle", "torch.save"]
)
def test_a_pickled_graph_loads_back_with_identical_outputs(spec: str, round_trip) -> None:
    gm, x = _graph(spec)
    loaded = round_trip(gm).eval()
    assert [type(m) for m in loaded.modules()][1:] == [type(m) for m in gm.modules()][1:]
    state, loaded_state = gm.state_dict(), loaded.state_dict()
    assert list(loaded_state) == list(state)
    assert all(torch.equal(loaded_state[k], state[k]) for k in state)
    with torch.no_grad():
        assert torch.equal(loaded(x), gm(x))
    assert loaded.code == gm.code
