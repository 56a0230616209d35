"""What every registered pass promises: selection fields take plain dicts, and the statistics
report each layer left unchanged under `skipped` with a reason."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

import pytest
import torch
from torch import fx, nn

from bitfx.ir import capture
from bitfx.ir.rewrite import is_activation, is_rectifier, is_relu
from bitfx.passes import LayerSelection, Pass, Pipeline, available_passes, create_pass

# pass name → (passes run before it, its parameters with every selection written as a plain dict,
# a layer of `_model()` that the selection leaves unchanged, or None)
CASES: dict[str, tuple[list[tuple[str, dict[str, Any]]], dict[str, Any], str | None]] = {
    "fold_gabor": ([], {}, None),
    "fuse_bn": ([], {}, None),
    "iff": ([], {"features": "2", "outputs": "5"}, None),
    "insert_gates": ([], {}, "8"),
    "binarize": ([], {"keep_first": False, "layers": {"default": True, "by_name": {"3": False}}}, "3"),
    "rotate": ([("binarize", {"keep_first": False})], {"layers": {"default": True, "by_name": {"0": False}}}, "0"),
    "pams": ([], {"float_ends": False, "layers": {"default": True, "by_name": {"3": False}}}, "3"),
    "rank_prune": ([], {"criterion": "l1", "rates": {"by_name": {"0": 0.25, "3": 0.0}}}, "3"),
}


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU6(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    ).eval()


def _captured() -> fx.GraphModule:
    return capture(_model(), torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1)))


def _selection_fields(cls: type[Pass]) -> list[str]:
    hints = typing.get_type_hints(cls)
    return [f.name for f in dataclasses.fields(cls) if hints[f.name] is LayerSelection]


def _run(name: str, pass_: Pass) -> dict[str, Any]:
    before, _, _ = CASES[name]
    pipeline = Pipeline([*(create_pass(n, p) for n, p in before), pass_])
    return pipeline.run(_captured()).records[-1].stats


def test_every_registered_pass_has_a_case() -> None:
    bitfx_passes = {name for name, cls in available_passes().items() if cls.__module__.startswith("bitfx.passes.")}
    assert bitfx_passes == set(CASES)  # other test modules register passes of their own


@pytest.mark.parametrize("name", sorted(CASES))
def test_dict_selection_works_like_layer_selection(name: str) -> None:
    cls = available_passes()[name]
    _, params, _ = CASES[name]
    fields = _selection_fields(cls)
    as_objects = {k: LayerSelection.from_config(v) if k in fields else v for k, v in params.items()}
    from_dicts, from_objects = cls(**params), cls(**as_objects)
    for field_name in fields:
        assert isinstance(getattr(from_dicts, field_name), LayerSelection)
    assert from_dicts == from_objects
    assert _run(name, from_dicts) == _run(name, from_objects)


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_pass_reports_skipped_layers_with_reasons(name: str) -> None:
    _, params, unchanged = CASES[name]
    skipped = _run(name, available_passes()[name](**params))["skipped"]
    assert isinstance(skipped, dict)
    assert all(
        isinstance(layer, str) and isinstance(reason, str) and reason.strip() for layer, reason in skipped.items()
    )
    if unchanged is not None:
        assert unchanged in skipped


def test_pipeline_table_lists_skipped_layers_with_reasons() -> None:
    result = Pipeline.from_spec("binarize(keep_first=false)").run(_captured())
    assert "skipped=1" in str(result)
    assert "binarize skipped 8: last layer, the classifier or output (keep_last=True)" in str(result)


def test_activation_vocabulary() -> None:
    gm = capture(_model(), torch.randn(1, 3, 8, 8))
    nodes = {node.target: node for node in gm.graph.nodes if node.op == "call_module"}
    relu, relu6, conv = nodes["2"], nodes["5"], nodes["0"]
    assert is_activation(gm, relu) and is_rectifier(gm, relu) and is_relu(gm, relu)
    # ReLU6 is a rectifier (sign of its output is always +1) but does not fold like max(x, 0)
    assert is_activation(gm, relu6) and is_rectifier(gm, relu6) and not is_relu(gm, relu6)
    assert not (is_activation(gm, conv) or is_rectifier(gm, conv) or is_relu(gm, conv))
