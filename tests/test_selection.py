import pytest
import torch
from torch import nn

from bitfx.errors import PassConfigError
from bitfx.ir import capture
from bitfx.passes import LayerSelection


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3)
        self.block = nn.Sequential(nn.Conv2d(8, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 1))
        self.head = nn.Sequential(nn.Flatten(), nn.LazyLinear(4))

    def forward(self, x):
        return self.head(self.block(self.stem(x)))


class MyConv(nn.Conv2d):
    pass


def test_precedence_default_type_regex_name():
    selection = LayerSelection(
        default="default",
        by_type={nn.Conv2d: "type"},
        by_regex={r"block\..*": "regex"},
        by_name={"block.2": "name"},
    )
    conv, relu = nn.Conv2d(1, 1, 1), nn.ReLU()
    assert selection.resolve("block.1", relu).value == "regex"
    assert selection.resolve("block.2", conv).value == "name"
    assert selection.resolve("block.0", conv).value == "regex"
    assert selection.resolve("stem", conv).value == "type"
    assert selection.resolve("head.0", relu).value == "default"
    assert selection.resolve("stem", conv).rule == "type Conv2d"
    assert selection.resolve("block.2", conv).rule == "name 'block.2'"


def test_regex_must_match_the_whole_name_and_last_match_wins():
    selection = LayerSelection(by_regex={r"block\..*": 1, r".*\.2": 2})
    relu = nn.ReLU()
    assert selection.resolve("block.2", relu).value == 2
    assert selection.resolve("block.0", relu).value == 1
    assert selection.resolve("xblock.0", relu).value is None  # no partial match


def test_type_rule_matches_subclasses_most_specific_first():
    selection = LayerSelection(by_type={"Conv2d": "conv", "MyConv": "mine"})
    assert selection.resolve("a", MyConv(1, 1, 1)).value == "mine"
    assert LayerSelection(by_type={"Conv2d": "conv"}).resolve("a", MyConv(1, 1, 1)).value == "conv"


def test_select_returns_candidates_with_decisions():
    model = Net()
    gm = capture(model, torch.randn(1, 3, 8, 8))
    chosen = LayerSelection(default=True, by_name={"stem": False}).select(gm, (nn.Conv2d,))
    assert [(node.target, decision.value) for node, _, decision in chosen] == [
        ("stem", False),
        ("block.0", True),
        ("block.2", True),
    ]


def test_unknown_name_and_bad_regex_are_errors():
    gm = capture(Net(), torch.randn(1, 3, 8, 8))
    with pytest.raises(PassConfigError, match=r"\['stemm'\].*not modules"):
        LayerSelection(by_name={"stemm": True}).select(gm, (nn.Conv2d,))
    with pytest.raises(PassConfigError, match="invalid regex"):
        LayerSelection(by_regex={"block[": True})
    with pytest.raises(PassConfigError, match="unknown keys"):
        LayerSelection.from_config({"by_names": {}})


def test_config_round_trip():
    selection = LayerSelection(default=0.5, by_type={nn.Linear: 0.0}, by_regex={"block.*": 0.3}, by_name={"stem": 0.1})
    again = LayerSelection.from_config(selection.to_config())
    assert again == selection
    assert LayerSelection.from_config(0.25).default == 0.25
