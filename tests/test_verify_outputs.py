"""`verify` pairs a module's outputs with the ONNX file's by name, for dict, tuple and nested outputs."""

import pytest
import torch
from torch import nn

from bitfx.backends.onnx import export, session, verify
from bitfx.errors import LoweringError
from bitfx.ir import capture


class DictHeads(nn.Module):
    """Returns a dict whose key order is not alphabetical, nested with a tuple and a dict."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1)

    def forward(self, x: torch.Tensor) -> dict:
        return {"zeta": self.a(x), "alpha": (self.b(x), {"inner": self.a(x) * 2, "b": self.b(x) + 1})}


class NestedTuple(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple:
        return self.a(x), (self.b(x), [self.a(x) - self.b(x)])


def _exported(model: nn.Module, tmp_path, name: str):
    x = torch.randn(2, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    gm = capture(model, x)
    return gm, x, export(gm, x, tmp_path / f"{name}.onnx")


def test_dict_outputs_are_named_after_their_keys_and_paired_by_name(tmp_path):
    gm, x, path = _exported(DictHeads(), tmp_path, "dict")
    assert [o.name for o in session(path).get_outputs()] == ["zeta", "alpha.0", "alpha.1.inner", "alpha.1.b"]
    report = verify(path, gm, x)
    assert report.ok and len(report.outputs) == 4 and report.max_rel_error < 1e-5


def test_nested_tuple_outputs_are_named_by_position(tmp_path):
    gm, x, path = _exported(NestedTuple(), tmp_path, "tuple")
    assert [o.name for o in session(path).get_outputs()] == ["0", "1.0", "1.1.0"]
    report = verify(path, gm, x)
    assert report.ok and len(report.outputs) == 3


def test_outputs_that_do_not_match_by_name_or_count_are_an_error_not_a_silent_zip(tmp_path):
    dict_gm, x, dict_path = _exported(DictHeads(), tmp_path, "dict")
    tuple_gm, _, tuple_path = _exported(NestedTuple(), tmp_path, "tuple")
    with pytest.raises(LoweringError, match=r"module returns 3 outputs \['0', '1.0', '1.1.0'\] and the ONNX file 4"):
        verify(dict_path, tuple_gm, x)
    with pytest.raises(LoweringError, match="do not match the ONNX file's outputs"):
        verify(tuple_path, _Renamed(), x)


class _Renamed(nn.Module):
    """Three outputs like NestedTuple's, under dict keys."""

    def forward(self, x: torch.Tensor) -> dict:
        return {"p": x, "q": x, "r": x}
