"""The int8 marker of a lowered file (bitfx.format.int8_marker): `export(..., int8_float_convs=...)`
writes it as model metadata that stock onnxruntime ignores, the packed runtime's `load` runs the
marked float Convs on its int8 kernel, and the caller can switch it off or override it. Malformed
markers are in the hostile-file corpus of test_packed_untrusted.py."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from bitfx.backends.onnx import export, run_session, session
from bitfx.backends.packed import PackedModelError, load
from bitfx.cli import main
from bitfx.errors import BitfxError, LoweringError
from bitfx.format.domain import INT8_CONVS_METADATA_KEY
from bitfx.format.int8_marker import Int8MarkerError, decode_int8_marker, encode_int8_marker
from bitfx.ir import capture


def stem_net() -> nn.Module:
    """A stem (7×7/2 conv, Relu, 3×3/2 max pool) and a conv that reads no model input."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 7, stride=2, padding=3),
        nn.ReLU(),
        nn.MaxPool2d(3, 2, 1),
        nn.Conv2d(16, 8, 3, padding=1),
    ).eval()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, object]:
    folder = tmp_path_factory.mktemp("int8_marker")
    x = torch.randn(2, 3, 32, 30, generator=torch.Generator().manual_seed(1))
    gm = capture(stem_net(), (x,))
    return {
        "x": x.numpy(),
        "plain": export(gm, (x,), folder / "plain.onnx"),
        "marked": export(gm, (x,), folder / "marked.onnx", int8_float_convs=x),
        "ranged": export(gm, (x,), folder / "ranged.onnx", int8_float_convs=(-3.0, 3.0)),
    }


def marker_of(path) -> dict[str, tuple[float, float]]:
    props = {entry.key: entry.value for entry in onnx.load(str(path)).metadata_props}
    return decode_int8_marker(props[INT8_CONVS_METADATA_KEY])


def test_export_marks_the_convs_that_read_the_model_input(files) -> None:
    x = files["x"]
    marked = marker_of(files["marked"])
    assert len(marked) == 1
    assert list(marked.values()) == [(float(x.min()), float(x.max()))]
    assert list(marker_of(files["ranged"]).values()) == [(-3.0, 3.0)]
    plain = {entry.key for entry in onnx.load(str(files["plain"])).metadata_props}
    assert INT8_CONVS_METADATA_KEY not in plain
    graph = onnx.load(str(files["marked"])).graph
    assert all(not attribute.name.startswith("bitfx") for node in graph.node for attribute in node.attribute)


def test_stock_onnxruntime_runs_the_marked_file_as_the_plain_one(files) -> None:
    x = files["x"]
    (plain,) = run_session(session(files["plain"]), [x])
    (marked,) = run_session(session(files["marked"]), [x])
    np.testing.assert_array_equal(marked, plain)


def test_load_runs_the_marked_convs_in_int8_unless_switched_off_or_overridden(files) -> None:
    x = files["x"]
    low, high = marker_of(files["marked"]).popitem()[1]
    by_marker = load(files["marked"])
    assert by_marker.report.int8_convs == 1
    assert "file's marker" in by_marker.report.int8_nodes[0]
    assert len(by_marker.report.int8_skipped) == 1 and "marker does not name it" in by_marker.report.int8_skipped[0]
    by_range = load(files["plain"], int8_float_convs=(low, high))
    assert "range passed to load" in by_range.report.int8_nodes[0]
    (marked,) = by_marker.run([x])
    (ranged,) = by_range.run([x])
    np.testing.assert_array_equal(marked, ranged)  # the marker's range is the range the kernel uses
    off = load(files["marked"], int8_float_convs=False)
    assert off.report.int8_convs == 0 and off.report.int8_nodes == []
    (float_out,) = off.run([x])
    np.testing.assert_array_equal(float_out, load(files["plain"]).run([x])[0])
    assert 1e-6 < np.abs(marked - float_out).max() / np.abs(float_out).max() < 0.05  # quantized and close
    override = load(files["marked"], int8_float_convs=(-1.0, 1.0))
    assert "[-1, 1] (the range passed to load)" in override.report.int8_nodes[0]
    assert load(files["plain"]).report.int8_convs == 0


def test_true_requires_a_marker(files) -> None:
    assert load(files["marked"], int8_float_convs=True).report.int8_convs == 1
    with pytest.raises(BitfxError, match="has no marker"):
        load(files["plain"], int8_float_convs=True)


def test_a_marked_conv_the_int8_kernel_cannot_run_stays_float_with_the_reason(tmp_path) -> None:
    net = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=2)).eval()
    x = torch.randn(1, 4, 8, 8)
    model = load(export(capture(net, (x,)), (x,), tmp_path / "g.onnx", int8_float_convs=(-1.0, 1.0)))
    assert model.report.int8_convs == 0
    assert "group=2" in model.report.int8_skipped[0]


def test_export_refuses_a_model_with_nothing_to_mark_and_a_bad_range(tmp_path) -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 2)).eval()
    x = torch.randn(1, 3, 2, 2)
    with pytest.raises(LoweringError, match="no float Conv"):
        export(capture(net, (x,)), (x,), tmp_path / "l.onnx", int8_float_convs=(0.0, 1.0))
    conv = nn.Sequential(nn.Conv2d(3, 2, 1)).eval()
    with pytest.raises(BitfxError, match="low < high"):
        export(capture(conv, (x,)), (x,), tmp_path / "c.onnx", int8_float_convs=(1.0, 0.0))


def test_the_marker_round_trips_and_refuses_what_it_cannot_write() -> None:
    ranges = {"/0/Conv": (-2.5, 2.75), "stem": (0.0, 1.0)}
    assert decode_int8_marker(encode_int8_marker(ranges)) == ranges
    for bad in ({"a": (1.0, 1.0)}, {"a": (0.0, float("inf"))}, {"": (0.0, 1.0)}):
        with pytest.raises(Int8MarkerError):
            encode_int8_marker(bad)
    with pytest.raises(Int8MarkerError, match="must be text"):
        decode_int8_marker(b"{}")


def test_a_malformed_marker_is_ignored_when_int8_is_switched_off(files, tmp_path) -> None:
    proto = onnx.load(str(files["marked"]))
    onnx.helper.set_model_props(proto, {INT8_CONVS_METADATA_KEY: "{"})
    with pytest.raises(PackedModelError, match="not valid JSON"):
        load(proto)
    assert load(proto, int8_float_convs=False).report.int8_convs == 0


@pytest.mark.parametrize("flag", ["--int8-float-convs=-3,3", "--int8-float-convs"])
def test_bitfx_compile_writes_the_marker(flag: str, tmp_path) -> None:
    out = tmp_path / "m.onnx"
    assert main(["compile", "bitfx.zoo:resnet20", "--passes", "fuse_bn", "--no-verify", "-o", str(out), flag]) == 0
    (value_range,) = marker_of(out).values()
    assert value_range == (-3.0, 3.0) if flag.endswith("3") else value_range[0] < 0 < value_range[1]
    assert load(out).report.int8_convs == 1


def test_a_marker_may_name_a_conv_that_reads_no_model_input(files) -> None:
    """The format keys Convs by name: an inner Conv runs in int8 over the marker's range of its input."""
    proto = onnx.load(str(files["plain"]))
    inner = [node.name for node in proto.graph.node if node.op_type == "Conv"][1]
    onnx.helper.set_model_props(proto, {INT8_CONVS_METADATA_KEY: encode_int8_marker({inner: (0.0, 4.0)})})
    model = load(proto)
    assert model.report.int8_convs == 1 and repr(inner) in model.report.int8_nodes[0]
    (int8,) = model.run([files["x"]])
    (float_out,) = load(files["plain"]).run([files["x"]])
    assert 1e-6 < np.abs(int8 - float_out).max() / np.abs(float_out).max() < 0.05
