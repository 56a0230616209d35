"""The ONNX back end: export, checking, verification, loading and inspection."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from helpers import randomize_batchnorm
from onnx import numpy_helper
from torch import nn

from bitfx import zoo
from bitfx.backends.onnx import export, load_model, onnx_summary, op_counts, optimized_op_counts, session, verify
from bitfx.errors import LoweringError
from bitfx.ir import capture, summary
from bitfx.passes import Pipeline


def build(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return randomize_batchnorm(getattr(zoo, name)(), seed)


def seeded_input(model: nn.Module, batch: int, seed: int) -> torch.Tensor:
    shape = (batch, *model.example_input_shape[1:])
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def fused_export(tmp_path_factory: pytest.TempPathFactory):
    """`fused_export(name)` -> (model, fused GraphModule, ONNX path), built once per module."""
    cache: dict[str, tuple[nn.Module, torch.fx.GraphModule, Path]] = {}

    def get(name: str):
        if name not in cache:
            model = build(name)
            x = seeded_input(model, batch=2, seed=1)
            gm = Pipeline.from_spec("fuse_bn").run(capture(model, x)).graph_module
            path = export(gm, x, tmp_path_factory.mktemp(name) / f"{name}.onnx")
            cache[name] = (model, gm, path)
        return cache[name]

    return get


@pytest.mark.parametrize("name", zoo.MODELS)
def test_export_checks_and_verifies_with_dynamic_batch(name: str, fused_export) -> None:
    model, gm, path = fused_export(name)
    assert path.is_file()
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)

    proto = load_model(path)
    for value in (proto.graph.input[0], proto.graph.output[0]):
        assert value.type.tensor_type.shape.dim[0].dim_param == "batch", value.name

    report = verify(path, gm, seeded_input(model, batch=3, seed=2))
    assert report.ok
    assert report.max_rel_error <= 1e-4
    assert len(report.outputs) == 1


def test_verify_detects_a_different_module(fused_export) -> None:
    model, _, path = fused_export("resnet20")
    other = build("resnet20", seed=7).eval()
    report = verify(path, other, seeded_input(model, batch=3, seed=2))
    assert not report.ok
    assert report.max_rel_error > 0.1


def test_unknown_lowering_lists_the_available_ones(tmp_path: Path) -> None:
    model = build("resnet20")
    x = seeded_input(model, batch=2, seed=1)
    gm = capture(model, x)
    with pytest.raises(LoweringError, match="float") as info:
        export(gm, x, tmp_path / "m.onnx", lowering="no_such_lowering")
    assert "no_such_lowering" in str(info.value)
    assert not (tmp_path / "m.onnx").exists()


def test_load_model_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.onnx"
    with pytest.raises(LoweringError, match="missing.onnx"):
        load_model(missing)


@pytest.fixture
def corrupt_onnx(tmp_path: Path) -> Path:
    path = tmp_path / "x.onnx"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return path


def test_load_model_corrupt_file(corrupt_onnx: Path) -> None:
    with pytest.raises(LoweringError, match="x.onnx"):
        load_model(corrupt_onnx)


def test_session_corrupt_file(corrupt_onnx: Path) -> None:
    with pytest.raises(LoweringError, match="x.onnx"):
        session(corrupt_onnx)


def test_op_counts_match_the_graph_nodes(fused_export) -> None:
    _, _, path = fused_export("resnet20")
    proto = onnx.load(str(path))
    expected = Counter(node.op_type for node in proto.graph.node)
    assert op_counts(proto) == dict(expected)
    assert "BatchNormalization" not in expected


def test_optimized_op_counts_show_what_onnxruntime_runs(fused_export) -> None:
    _, _, path = fused_export("resnet20")
    optimized = optimized_op_counts(path)
    assert sum(count for op, count in optimized.items() if op.endswith("Conv")) == 21
    assert optimized != op_counts(onnx.load(str(path)))  # onnxruntime rewrote the graph


@pytest.mark.parametrize("name", ["resnet20", "vgg_small"])
def test_onnx_summary_totals(name: str, fused_export) -> None:
    _, gm, path = fused_export(name)
    proto = onnx.load(str(path))
    table = onnx_summary(proto)

    assert table.total.params == sum(numpy_helper.to_array(init).size for init in proto.graph.initializer)
    assert len(table.rows) == len(proto.graph.node)

    product_macs = sum(row.cost.macs for row in table.rows if row.target in ("Conv", "Gemm"))
    assert product_macs == summary(gm).total.macs > 0


def test_export_leaves_training_flags_and_bn_stats_alone(tmp_path: Path) -> None:
    model = build("resnet20").train()
    x = seeded_input(model, batch=2, seed=1)
    gm = capture(model, x)
    gm.train()
    stats_before = {name: buffer.clone() for name, buffer in gm.named_buffers()}

    export(gm, x, tmp_path / "m.onnx")

    assert all(module.training for module in gm.modules())
    assert all(module.training for module in model.modules())
    for name, buffer in gm.named_buffers():
        assert torch.equal(buffer, stats_before[name]), name
    assert os.path.getsize(tmp_path / "m.onnx") > 0


def test_int8_binary_convs_count_as_quantized_and_fused(tmp_path: Path) -> None:
    from bitfx.backends.onnx import quantized_layer_fusion

    model = build("resnet20")
    x = seeded_input(model, batch=2, seed=1)
    gm = Pipeline.from_spec("fuse_bn,binarize").run(capture(model, x)).graph_module
    path = export(gm, x, tmp_path / "int8.onnx", lowering="int8")
    fusion = quantized_layer_fusion(path)
    assert fusion["quantized_convs"] == op_counts(load_model(path))["ConvInteger"] == 20
    assert fusion["fused_convs"] == 20 and fusion["all_fused"]


def test_onnx_summary_counts_binary_macs_like_the_graph(tmp_path: Path) -> None:
    model = build("resnet20")
    x = seeded_input(model, batch=2, seed=1)
    gm = Pipeline.from_spec("fuse_bn,binarize").run(capture(model, x)).graph_module
    path = export(gm, x, tmp_path / "custom.onnx", lowering="custom")
    rows = onnx_summary(load_model(path)).rows
    binary = [r for r in rows if r.target == "bitfx.BinaryConv2d"]
    assert len(binary) == 20 and all(r.cost.macs > 0 for r in binary)
    assert sum(r.cost.macs for r in rows) == summary(gm).total.macs
