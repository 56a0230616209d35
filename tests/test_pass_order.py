"""Pass orders that cannot work are refused up front, naming both passes and the order that works."""

import pytest
import torch

from bitfx import zoo
from bitfx.errors import PassError
from bitfx.ir import capture
from bitfx.passes import Pipeline
from bitfx.passes.core.ordering import BINARY_LAYERS
from bitfx.passes.core.registry import available_passes


@pytest.fixture(scope="module")
def gm():
    torch.manual_seed(0)
    return capture(zoo.resnet20(), torch.randn(2, 3, 32, 32))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("rotate,binarize", "pass 'rotate' needs binary layers, which pass 'binarize' creates, but 'binarize' comes"),
        ("fuse_bn,rotate", "pass 'rotate' needs binary layers and the graph has none; run 'binarize' before it"),
        (
            "binarize,pams",
            "pass 'pams' cannot work on binary layers and pass 'binarize' .*: run 'pams' before 'binarize'",
        ),
        ("binarize,rank_prune", "pass 'rank_prune' cannot work on binary layers and pass 'binarize' .* before 'binar"),
    ],
)
def test_an_order_that_cannot_work_is_refused_before_any_pass_runs(gm, spec, message, monkeypatch):
    ran = []
    monkeypatch.setattr(Pipeline, "_run_one", lambda self, index, *args: ran.append(index))
    with pytest.raises(PassError, match=message):
        Pipeline.from_spec(spec).run(gm)
    assert ran == []


def test_a_pass_that_conflicts_with_the_input_graph_says_so(gm):
    binary = Pipeline.from_spec("binarize").run(gm).graph_module
    with pytest.raises(PassError, match=r"'pams' cannot work on binary layers and the input graph has them \(e.g."):
        Pipeline.from_spec("pams").run(binary)


def test_the_rules_are_declared_by_the_passes():
    passes = available_passes()
    assert BINARY_LAYERS in passes["binarize"].creates and BINARY_LAYERS in passes["rotate"].needs
    assert all(BINARY_LAYERS in passes[name].conflicts for name in ("pams", "rank_prune"))
    assert BINARY_LAYERS not in passes["fuse_bn"].conflicts  # it folds BatchNorm into binary layers too
