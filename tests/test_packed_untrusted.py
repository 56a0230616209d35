"""An ONNX file is untrusted input to the packed runtime: a malformed-file corpus (every case is
refused at load with a message naming the node and the attribute or input), inputs of other
dtypes and layouts on every run, and the bounded plan cache. `./dev sanitize` runs this file
under AddressSanitizer and UndefinedBehaviorSanitizer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from bitfx.backends.packed import PackedModelError, compiler, load, reference
from bitfx.errors import BitfxError
from bitfx.format.domain import INT8_CONVS_METADATA_KEY

INPUT = (1, 8, 6, 6)


def model(nodes: list[onnx.NodeProto], initializers: dict[str, np.ndarray], shape: tuple = INPUT) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "untrusted",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(value, name) for name, value in initializers.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("bitfx", 1)])


def conv(weights: tuple = (4, 8, 3, 3), bias: int | None = 4, inputs: int = 3, **attributes) -> onnx.ModelProto:
    attributes = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], **attributes}
    constants = {"W": np.ones(weights, np.float32)}
    if bias is not None:
        constants["B"] = np.ones(bias, np.float32)
    names = ["x", "W", "B"][:inputs]
    return model([helper.make_node("Conv", names, ["y"], name="conv0", **attributes)], constants)


def max_pool(**attributes) -> onnx.ModelProto:
    attributes = {"kernel_shape": [2, 2], **attributes}
    return model([helper.make_node("MaxPool", ["x"], ["y"], name="pool0", **attributes)], {})


def average_pool(**attributes) -> onnx.ModelProto:
    attributes = {"kernel_shape": [2, 2], **attributes}
    return model([helper.make_node("AveragePool", ["x"], ["y"], name="avg0", **attributes)], {})


def binary_conv(
    out_channels: int = 4, words: int | None = None, scale: int = 4, bias: int = 4, **attributes
) -> onnx.ModelProto:
    """A bitfx.BinaryConv2d reading `x` (binarize_input=1 by default)."""
    attributes = {
        "kernel_shape": [3, 3],
        "strides": [1, 1],
        "pads": [1, 1, 1, 1],
        "dilations": [1, 1],
        "group": 1,
        "in_channels": 8,
        "pad_value": 0,
        "binarize_input": 1,
        **attributes,
    }
    group, kh, kw = attributes["group"], *attributes["kernel_shape"]
    weights = reference.pack_conv_weights(np.ones((out_channels, 8 // max(group, 1), kh, kw), np.float32))
    if words is not None:
        weights = np.zeros((out_channels, kh, kw, words), np.uint64)
    constants = {"W": weights, "S": np.ones(scale, np.float32), "B": np.ones(bias, np.float32)}
    node = helper.make_node("BinaryConv2d", ["x", "W", "S", "B"], ["y"], name="bconv0", domain="bitfx", **attributes)
    return model([node], constants)


def binary_gemm(out_features: int = 4, scale: int = 4, bias: int = 4, weights_rank: int = 2, **attributes):
    attributes = {"in_features": 8, "binarize_input": 1, **attributes}
    weights = np.zeros((out_features, 1) if weights_rank == 2 else (out_features,), np.uint64)
    constants = {"W": weights, "S": np.ones(scale, np.float32), "B": np.ones(bias, np.float32)}
    node = helper.make_node("BinaryGemm", ["x", "W", "S", "B"], ["y"], name="bgemm0", domain="bitfx", **attributes)
    return model([node], constants, shape=(1, 8))


def threshold_chain_of_wrong_width() -> onnx.ModelProto:
    """Two binary layers joined by a Mul whose per-channel constant has 3 channels, not 4."""
    first = binary_conv()
    second = binary_conv(in_channels=4)
    nodes = [first.graph.node[0], helper.make_node("Mul", ["y", "M"], ["m"], name="mul0"), second.graph.node[0]]
    nodes[0].output[0], nodes[2].input[0], nodes[2].name = "y", "m", "bconv1"
    nodes[2].input[1], nodes[2].output[0] = "W1", "out"
    constants = {i.name: numpy_helper.to_array(i) for i in first.graph.initializer}
    constants["W1"] = numpy_helper.to_array(second.graph.initializer[0])
    constants["M"] = np.ones((1, 3, 1, 1), np.float32)
    proto = model(nodes, constants)
    proto.graph.output[0].name = "out"
    return proto


def unknown_input_type() -> onnx.ModelProto:
    proto = conv()
    proto.graph.input[0].type.tensor_type.elem_type = 999
    return proto


def short_raw_initializer() -> onnx.ModelProto:
    """A Conv whose weight initializer declares 4×8×3×3 but holds the bytes of fewer values."""
    proto = conv()
    weights = proto.graph.initializer[0]
    weights.raw_data = weights.raw_data[:100]
    return proto


def huge_initializer() -> onnx.ModelProto:
    """An initializer declaring 2^40 elements (a file can claim any size)."""
    proto = conv()
    del proto.graph.initializer[0].dims[:]
    proto.graph.initializer[0].dims.extend([1 << 20, 1 << 20, 1, 1])
    return proto


def resize(scales: list[float] | None = None, **attributes) -> onnx.ModelProto:
    """A Resize of `x` by constant scales (doubling height and width unless given)."""
    constants = {"scales": np.array(scales or [1, 1, 2, 2], np.float32)}
    return model([helper.make_node("Resize", ["x", "", "scales"], ["y"], name="resize0", **attributes)], constants)


def gelu(**attributes) -> onnx.ModelProto:
    proto = model([helper.make_node("Gelu", ["x"], ["y"], name="gelu0", **attributes)], {})
    proto.opset_import[0].version = 20
    return proto


def gather_nd(indices: np.ndarray, **attributes) -> onnx.ModelProto:
    return model(
        [helper.make_node("GatherND", ["x", "indices"], ["y"], name="gathernd0", **attributes)], {"indices": indices}
    )


def conv_1d(**attributes) -> onnx.ModelProto:
    """A 1-D Conv on an N×C×L input."""
    attributes = {"kernel_shape": [3], "pads": [1, 1], **attributes}
    node = helper.make_node("Conv", ["x", "W"], ["y"], name="conv1d0", **attributes)
    return model([node], {"W": np.ones((4, 8, 3), np.float32)}, shape=(1, 8, 10))


# (model, words every message must contain): the node's name and the attribute or input at fault.
def int8_marker(text: str) -> onnx.ModelProto:
    """conv() whose int8 marker (model metadata) is `text`."""
    proto = conv()
    helper.set_model_props(proto, {INT8_CONVS_METADATA_KEY: text})
    return proto


def int8_marker_of(convs: object, version: object = 1) -> onnx.ModelProto:
    return int8_marker(json.dumps({"version": version, "convs": convs}))


MARKER = "int8 marker"


def relu_marked() -> onnx.ModelProto:
    """A Relu after conv0, named by the int8 marker."""
    proto = int8_marker_of({"relu0": [0, 1]})
    proto.graph.node[0].output[0] = "c"
    proto.graph.node.append(helper.make_node("Relu", ["c"], ["y"], name="relu0"))
    return proto


CORPUS: dict[str, tuple[Callable[[], onnx.ModelProto], tuple[str, ...]]] = {
    "conv-negative-pads": (lambda: conv(pads=[-2, -2, 1, 1]), ("conv0", "pads", ">= 0")),
    "conv-negative-dilations": (lambda: conv(dilations=[-50, -50]), ("conv0", "dilations", ">= 1")),
    "conv-zero-stride": (lambda: conv(strides=[0, 1]), ("conv0", "strides", ">= 1")),
    "conv-negative-stride": (lambda: conv(strides=[-1, -1]), ("conv0", "strides", ">= 1")),
    "conv-pads-wrong-length": (lambda: conv(pads=[1, 1]), ("conv0", "pads", "4 values")),
    "conv-short-bias": (lambda: conv(bias=1), ("conv0", "B", "4")),
    "conv-long-bias": (lambda: conv(bias=9), ("conv0", "B", "4")),
    "conv-group-does-not-divide": (lambda: conv(weights=(4, 8, 3, 3), group=3), ("conv0", "group", "divide")),
    "conv-weights-wrong-rank": (lambda: conv(weights=(4, 8, 3)), ("conv0", "W", "4 dimensions")),
    "conv-missing-weights": (lambda: conv(inputs=1), ("conv0", "W", "missing")),
    "conv-kernel-shape-mismatch": (lambda: conv(kernel_shape=[5, 5]), ("conv0", "kernel_shape", "(3, 3)")),
    "conv-wrong-input-channels": (lambda: conv(weights=(4, 5, 3, 3)), ("conv0", "W", "8")),
    "conv-huge-kernel": (lambda: conv(kernel_shape=[1 << 40, 1]), ("conv0", "kernel_shape", "at most")),
    "conv-kernel-larger-than-padded-input": (lambda: conv(pads=[0, 0, 0, 0], dilations=[4, 4]), ("conv0", "6×6")),
    "maxpool-negative-pads": (lambda: max_pool(pads=[0, 0, -3, -3]), ("pool0", "pads", ">= 0")),
    "maxpool-zero-stride": (lambda: max_pool(strides=[0, 0]), ("pool0", "strides", ">= 1")),
    "maxpool-negative-dilations": (lambda: max_pool(dilations=[-1, 1]), ("pool0", "dilations", ">= 1")),
    "maxpool-no-kernel-shape": (lambda: max_pool(kernel_shape=None), ("pool0", "kernel_shape", "missing")),
    "maxpool-kernel-larger-than-input": (lambda: max_pool(kernel_shape=[7, 7]), ("pool0", "6×6")),
    "averagepool-negative-pads": (lambda: average_pool(pads=[-1, 0, 0, 0]), ("avg0", "pads", ">= 0")),
    "binary-conv-negative-pads": (lambda: binary_conv(pads=[-1, -1, 0, 0]), ("bconv0", "pads", ">= 0")),
    "binary-conv-negative-dilations": (lambda: binary_conv(dilations=[-3, 1]), ("bconv0", "dilations", ">= 1")),
    "binary-conv-zero-stride": (lambda: binary_conv(strides=[1, 0]), ("bconv0", "strides", ">= 1")),
    "binary-conv-short-scale": (lambda: binary_conv(scale=2), ("bconv0", "scale", "4")),
    "binary-conv-long-bias": (lambda: binary_conv(bias=40), ("bconv0", "bias", "4")),
    "binary-conv-short-weights": (lambda: binary_conv(words=0), ("bconv0", "W", "1")),
    "binary-conv-long-weights": (lambda: binary_conv(words=3), ("bconv0", "W", "1")),
    "binary-conv-group-does-not-divide": (lambda: binary_conv(group=3), ("bconv0", "group", "divide")),
    "binary-conv-zero-group": (lambda: binary_conv(group=0), ("bconv0", "group", ">= 1")),
    "binary-conv-huge-in-channels": (lambda: binary_conv(in_channels=1 << 40), ("bconv0", "in_channels")),
    "binary-conv-float-input-short-scale": (
        lambda: binary_conv(scale=3, binarize_input=0),
        ("bconv0", "scale", "4"),
    ),
    "binary-conv-float-input-negative-pads": (
        lambda: binary_conv(pads=[-1, 0, 0, 0], binarize_input=0),
        ("bconv0", "pads", ">= 0"),
    ),
    "binary-gemm-short-bias": (lambda: binary_gemm(bias=3), ("bgemm0", "bias", "4")),
    "binary-gemm-long-scale": (lambda: binary_gemm(scale=5), ("bgemm0", "scale", "4")),
    "binary-gemm-weights-wrong-rank": (lambda: binary_gemm(weights_rank=1), ("bgemm0", "W", "2 dimensions")),
    "binary-gemm-in-features-mismatch": (lambda: binary_gemm(in_features=200), ("bgemm0", "in_features", "1")),
    "binary-gemm-float-input-short-bias": (
        lambda: binary_gemm(bias=2, binarize_input=0),
        ("bgemm0", "bias", "4"),
    ),
    "resize-unknown-mode": (lambda: resize(mode="cubic"), ("resize0", "mode", "nearest, linear")),
    "resize-unknown-transform": (
        lambda: resize(coordinate_transformation_mode="tf_crop_and_resize"),
        ("resize0", "coordinate_transformation_mode", "half_pixel"),
    ),
    "resize-unknown-nearest-mode": (lambda: resize(nearest_mode="up"), ("resize0", "nearest_mode", "floor")),
    "resize-antialias": (lambda: resize(antialias=1, mode="linear"), ("resize0", "antialias", "at most 0")),
    "resize-negative-scales": (lambda: resize([1, 1, -2, 2]), ("resize0", "scales", "> 0")),
    "resize-scales-wrong-length": (lambda: resize([2, 2]), ("resize0", "scales", "one value per resized axis")),
    "resize-huge-scales": (lambda: resize([1, 1, 1e9, 1e9]), ("resize0", "output shape", "too large")),
    "gelu-unknown-approximation": (lambda: gelu(approximate="sigmoid"), ("gelu0", "approximate", "tanh")),
    "gathernd-negative-batch-dims": (
        lambda: gather_nd(np.zeros((1, 2), np.int64), batch_dims=-1),
        ("gathernd0", "batch_dims", ">= 0"),
    ),
    "gathernd-index-out-of-range": (
        lambda: gather_nd(np.array([[0, 9]], np.int64)),
        ("gathernd0", "outside data of shape"),
    ),
    "gathernd-indices-too-deep": (lambda: gather_nd(np.zeros((1, 5), np.int64)), ("gathernd0", "do not fit")),
    "conv1d-pads-wrong-length": (lambda: conv_1d(pads=[1, 1, 1, 1]), ("conv1d0", "pads", "2 values")),
    "conv1d-kernel-shape-mismatch": (lambda: conv_1d(kernel_shape=[5]), ("conv1d0", "kernel_shape", "(3,)")),
    "conv1d-zero-stride": (lambda: conv_1d(strides=[0]), ("conv1d0", "strides", ">= 1")),
    "threshold-chain-constant-of-wrong-width": (threshold_chain_of_wrong_width, ("mul0", "broadcast")),
    "input-of-unknown-element-type": (unknown_input_type, ("'x'", "element type 999")),
    "initializer-shorter-than-its-dims": (short_raw_initializer, ("'W'", "4×8×3×3")),
    "initializer-huge-dims": (huge_initializer, ("'W'", "at most")),
    "int8-marker-not-json": (lambda: int8_marker('{"version": 1, "convs": '), (MARKER, "not valid JSON")),
    "int8-marker-not-an-object": (lambda: int8_marker("[1, 2]"), (MARKER, '"version" and "convs"')),
    "int8-marker-extra-key": (lambda: int8_marker('{"version": 1, "convs": {}, "x": 0}'), (MARKER, '"convs"')),
    "int8-marker-unknown-version": (lambda: int8_marker_of({}, version=7), (MARKER, "version 7")),
    "int8-marker-convs-not-a-map": (lambda: int8_marker_of([["conv0", 0, 1]]), (MARKER, "Conv node names")),
    "int8-marker-unknown-node": (lambda: int8_marker_of({"conv9": [0, 1]}), (MARKER, "'conv9'", "does not have")),
    "int8-marker-nan-range": (lambda: int8_marker('{"version": 1, "convs": {"conv0": [NaN, 1]}}'), (MARKER, "NaN")),
    "int8-marker-infinite-range": (
        lambda: int8_marker('{"version": 1, "convs": {"conv0": [-Infinity, 1]}}'),
        (MARKER, "Infinity"),
    ),
    "int8-marker-overflowing-range": (lambda: int8_marker_of({"conv0": [-(10**400), 1]}), (MARKER, "finite")),
    "int8-marker-reversed-range": (lambda: int8_marker_of({"conv0": [2.0, -1.0]}), (MARKER, "'conv0'", "low < high")),
    "int8-marker-range-not-numbers": (lambda: int8_marker_of({"conv0": ["0", True]}), (MARKER, "two numbers")),
    "int8-marker-range-wrong-length": (lambda: int8_marker_of({"conv0": [0, 1, 2]}), (MARKER, "two numbers")),
    "int8-marker-huge-name": (lambda: int8_marker_of({"c" * 100_000: [0, 1]}), (MARKER, "at most 4096")),
    "int8-marker-huge-text": (lambda: int8_marker(" " * (1 << 21)), (MARKER, "at most 1048576")),
    "int8-marker-deep-nesting": (lambda: int8_marker("[" * 100_000), (MARKER, "not valid JSON")),
    "reduce-mean-axis-out-of-range": (lambda: reduce_mean([2, 7]), ("'mean0'", "axes [2, 7]", "[-4, 3]")),
    "reduce-mean-axes-not-integers": (lambda: reduce_mean([2.0, 3.0]), ("'mean0'", "axes [2.0, 3.0]", "integers")),
    "int8-marker-not-a-conv": (
        lambda: relu_marked(),
        (MARKER, "node 'relu0' (Relu)", "not a float Conv"),
    ),
}


def reduce_mean(axes: list) -> onnx.ModelProto:
    return model([helper.make_node("ReduceMean", ["x"], ["y"], name="mean0", axes=axes, keepdims=1)], {})


def run_once(proto: onnx.ModelProto) -> None:
    shape = tuple(d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim)
    load(proto).run([np.ones(shape, np.float32)])


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_a_malformed_file_is_refused_with_the_node_and_attribute(case: str) -> None:
    build, words = CORPUS[case]
    with pytest.raises(PackedModelError) as raised:
        run_once(build())
    message = str(raised.value)
    for word in words:
        assert word in message, f"{word!r} missing from: {message}"


def test_the_corpus_cannot_crash_the_interpreter() -> None:
    """The cases that corrupted the heap or read past a buffer, each in a fresh process (under
    `./dev sanitize` the sanitizers watch these processes too)."""
    script = (
        "import sys, test_packed_untrusted as t\n"
        "from bitfx.backends.packed import PackedModelError\n"
        "for case in sys.argv[1:]:\n"
        "    try:\n"
        "        t.run_once(t.CORPUS[case][0]())\n"
        "    except PackedModelError:\n"
        "        print('refused', case)\n"
        "    else:\n"
        "        print('ran', case)\n"
    )
    cases = [
        "conv-negative-pads",
        "conv-negative-dilations",
        "conv-short-bias",
        "maxpool-negative-pads",
        "binary-conv-negative-pads",
        "binary-conv-negative-dilations",
        "int8-marker-deep-nesting",
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(__file__), *sys.path])}
    result = subprocess.run(
        [sys.executable, "-c", script, *cases], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == [word for case in cases for word in ("refused", case)], result.stdout


@pytest.mark.parametrize("checked", [True, False])
def test_the_loaders_own_messages_are_not_hidden_behind_a_key_error(checked: bool, monkeypatch) -> None:
    """A binary layer whose kernel cannot be prepared is reported as such (by the load-time checks,
    or without them by the kernel's own check), never as a KeyError of its name."""
    if not checked:
        monkeypatch.setattr(compiler, "check_graph", lambda graph: [])
    with pytest.raises(PackedModelError, match=r"bconv0.*\(4, 3, 3, 2\)") as raised:
        load(binary_conv(words=2))
    assert not isinstance(raised.value.__context__, KeyError)


def small_conv() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    constants = {"W": rng.normal(size=(4, 8, 3, 3)).astype(np.float32), "B": rng.normal(size=4).astype(np.float32)}
    node = helper.make_node("Conv", ["x", "W", "B"], ["y"], name="conv0", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    return model([node], constants, shape=("N", 8, 6, 6))


@pytest.mark.parametrize("dtype", [np.float16, np.float64, np.int32, np.int64, np.bool_])
def test_inputs_of_another_dtype_are_converted_on_every_run(dtype: type) -> None:
    packed = load(small_conv())
    rng = np.random.default_rng(1)
    for _ in range(3):  # the first run plans; later runs reuse the plan
        x = (rng.normal(size=INPUT) * 3).astype(dtype)
        expected = load(small_conv()).run([x.astype(np.float32)])[0]
        np.testing.assert_array_equal(packed.run([x])[0], expected)


def test_non_contiguous_inputs_are_read_correctly_on_every_run() -> None:
    packed = load(small_conv())
    rng = np.random.default_rng(2)
    for _ in range(3):
        wide = rng.normal(size=(1, 8, 6, 12)).astype(np.float32)
        x = wide[:, :, :, ::2]
        assert not x.flags.c_contiguous
        np.testing.assert_array_equal(packed.run([x])[0], load(small_conv()).run([np.ascontiguousarray(x)])[0])


def test_a_kernel_reading_a_value_of_another_dtype_reads_it_on_every_run() -> None:
    """A Conv after a Cast to float16 converts its input on each run, not once when it is bound."""
    proto = small_conv()
    proto.graph.node[0].input[0] = "half"
    proto.graph.node.insert(0, helper.make_node("Cast", ["x"], ["half"], name="cast0", to=TensorProto.FLOAT16))
    packed, reference_model = load(proto), load(small_conv())
    rng = np.random.default_rng(4)
    for _ in range(3):
        x = rng.normal(size=INPUT).astype(np.float32)
        expected = reference_model.run([x.astype(np.float16).astype(np.float32)])[0]
        np.testing.assert_array_equal(packed.run([x])[0], expected)


@pytest.mark.parametrize("value", [np.ones(INPUT, np.complex64), np.full(INPUT, "a"), np.ones(INPUT, object)])
def test_inputs_that_are_not_numbers_are_refused(value: np.ndarray) -> None:
    with pytest.raises(PackedModelError, match="'x'.*float32"):
        load(small_conv()).run([value])


def test_the_plan_cache_is_bounded_and_reports_its_memory() -> None:
    packed = load(small_conv(), plan_cache_size=2)
    assert packed.plan_cache_info() == {"entries": 0, "max_entries": 2, "bytes": 0}
    for batch in (1, 2, 3):
        packed.run([np.ones((batch, 8, 6, 6), np.float32)])
    info = packed.plan_cache_info()
    assert info["entries"] == 2 and info["max_entries"] == 2
    # Batch 1 was evicted (least recently used): the cache holds batches 2 and 3.
    assert info["bytes"] == sum((batch * 8 * 36 + batch * 4 * 36) * 4 for batch in (2, 3))
    packed.run([np.ones((2, 8, 6, 6), np.float32)])  # touch batch 2: batch 3 is now the oldest
    packed.run([np.ones((1, 8, 6, 6), np.float32)])
    assert packed.plan_cache_info()["bytes"] == sum((batch * 8 * 36 + batch * 4 * 36) * 4 for batch in (1, 2))
    x = np.random.default_rng(3).normal(size=(3, 8, 6, 6)).astype(np.float32)
    np.testing.assert_array_equal(packed.run([x])[0], load(small_conv()).run([x])[0])


def test_the_plan_cache_has_a_default_size_and_refuses_a_bad_one() -> None:
    from bitfx.backends.packed.executor import DEFAULT_PLAN_CACHE_SIZE

    assert load(small_conv()).plan_cache_info()["max_entries"] == DEFAULT_PLAN_CACHE_SIZE
    for bad in (0, -1, 2.5, True):
        with pytest.raises(BitfxError, match="plan_cache_size"):
            load(small_conv(), plan_cache_size=bad)
