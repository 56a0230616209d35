"""The packed executor against onnxruntime: hand-built graphs (bitfx ops vs their standard-op
twins) and every example model lowered with `fuse_bn,binarize` → `custom` (the same file)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from helpers import randomize_batchnorm
from onnx import TensorProto, helper
from packed_models import NetBuilder

from bitfx import zoo
from bitfx.backends.onnx import export, run_session, session
from bitfx.backends.packed import PackedModel, PackedModelError
from bitfx.ir import capture
from bitfx.passes import Pipeline


def ort_outputs(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    """onnxruntime without graph optimisations: its Conv → Mul → Add fusions would round differently."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"]).run(
        None, {"x": x}
    )


def relative_error(expected: np.ndarray, actual: np.ndarray) -> float:
    return float(np.abs(expected.astype(np.float64) - actual).max() / max(np.abs(expected).max(), 1e-30))


def run_both(builder: NetBuilder, outputs: list[str], batches=(2,)) -> PackedModel:
    """Run the bitfx model on the executor and its twin on onnxruntime; all-binary graphs must agree exactly."""
    model, twin = builder.build(outputs)
    packed = PackedModel(model)
    for batch in batches:
        x = builder.input(batch)
        for expected, actual in zip(ort_outputs(twin, x), packed.run([x])):
            assert actual.shape == expected.shape
            np.testing.assert_array_equal(actual, expected)
    return packed


def test_binary_chain_stays_packed_through_bn_relu_and_max_pool() -> None:
    b = NetBuilder((1, 5, 12, 12), seed=1)
    h = b.binary_conv("x", 5, 70)
    h = b.affine(h, 70, negative=False)
    h = b.op("Relu", [h])
    h = b.op("MaxPool", [h], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    h = b.binary_conv(h, 70, 33, pad_value=-1)
    h = b.op("Sub", [h, b.const(np.linspace(-1, 1, 33, dtype=np.float32).reshape(1, 33, 1, 1))])  # an RSign-style shift
    h = b.binary_conv(h, 33, 16, stride=2, pad_value=1)
    packed = run_both(b, [h], batches=(2, 1, 3))
    assert packed.report.packed_outputs == 2
    assert packed.report.packed_max_pools == 1
    assert packed.report.packs == 1  # only the network input is packed from float


def test_negative_scales_flip_and_constant_channels_get_infinite_thresholds() -> None:
    b = NetBuilder((1, 8, 7, 7), seed=2)
    h = b.binary_conv("x", 8, 40)
    a = b.rng.uniform(0.5, 2, 40).astype(np.float32) * np.where(np.arange(40) % 2, -1, 1).astype(np.float32)
    a[:6] = 0  # y = bias: a channel whose sign never changes
    h = b.op("Mul", [h, b.const(a.reshape(1, 40, 1, 1))])
    h = b.op("Add", [h, b.const(np.where(np.arange(40) < 3, -1.0, 1.0).astype(np.float32).reshape(1, 40, 1, 1))])
    h = b.binary_conv(h, 40, 12, kernel=1, pads=(0, 0, 0, 0))
    packed = run_both(b, [h])
    assert packed.report.packed_outputs == 1


def test_non_monotone_chain_falls_back_to_float_and_stays_exact() -> None:
    b = NetBuilder((1, 8, 6, 6), seed=3)
    h = b.binary_conv("x", 8, 16)
    h = b.op("Abs", [h])
    h = b.op("Sub", [h, b.const(np.float32(3))])
    h = b.binary_conv(h, 16, 16)
    packed = run_both(b, [h])
    assert packed.report.packed_outputs == 0


def test_residual_blocks_groups_dilation_and_gemms() -> None:
    b = NetBuilder((1, 16, 9, 9), seed=4)
    h = b.binary_conv("x", 16, 16, dilation=2, pads=(2, 2, 2, 2))
    h = b.binary_conv(h, 16, 16, group=4)
    h = b.op("Relu", [b.op("Add", [h, "x"])])
    h = b.binary_conv(h, 16, 24, stride=2, binarize_input=0)  # W1A32
    pooled = b.op("Flatten", [b.op("GlobalAveragePool", [h])])
    logits = b.binary_gemm(b.binary_gemm(pooled, 24, 70), 70, 10, binarize_input=1)
    w1a32 = b.binary_gemm(pooled, 24, 5, binarize_input=0)
    model, twin = b.build([logits, w1a32, h])
    packed = PackedModel(model)
    x = b.input(2)
    for expected, actual in zip(ort_outputs(twin, x), packed.run([x])):
        assert relative_error(expected, actual) <= 1e-5
    assert packed.report.fused_epilogues >= 1
    assert packed.report.packed_outputs >= 1  # the gemm → gemm chain


def test_stem_conv_relu_max_pool_runs_as_one_fused_step() -> None:
    b = NetBuilder((1, 3, 37, 30), seed=6)
    h = b.op("Relu", [b.conv("x", 3, 70, 7, stride=2, pad=3)])
    h = b.op("MaxPool", [h], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    h = b.binary_conv(h, 70, 16)
    shared = b.conv("x", 3, 8, 3, pad=1)  # read by the pool and by the graph output: not fused
    pooled = b.op("MaxPool", [shared], kernel_shape=[2, 2], strides=[2, 2])
    model, twin = b.build([h, pooled, shared])
    packed = PackedModel(model)
    x = b.input(2)
    for expected, actual in zip(ort_outputs(twin, x), packed.run([x])):
        assert relative_error(expected, actual) <= 1e-5
    assert packed.report.fused_max_pools == 1
    assert [type(step).__name__ for step in packed.program.steps].count("FloatMaxPoolStep") == 1  # the shared one


def test_float_values_between_binary_layers_are_channels_last_unless_a_reader_needs_nchw() -> None:
    """`a` (read by a pack and a fused residual) and `h` (read by a pack and the graph output) live
    channels-last; `g`, read by a numpy Sigmoid, stays NCHW with the reason reported. Outputs are
    C-contiguous NCHW and match onnxruntime, on the first run and on the planned runs."""
    b = NetBuilder((1, 16, 9, 9), seed=7)
    a = b.binary_conv("x", 16, 40)
    h = b.op("Add", [b.binary_conv(a, 40, 40), a])
    g = b.binary_conv(h, 40, 24, stride=2)
    s = b.op("Sigmoid", [g])
    model, twin = b.build([h, s])
    packed = PackedModel(model)
    assert packed.report.channels_last == [a, h]
    assert packed.report.channels_first == [f"{g}: read by node {s!r} (Sigmoid), which needs NCHW"]
    x = b.input(2)
    for _ in range(3):
        for expected, actual in zip(ort_outputs(twin, x), packed.run([x])):
            assert actual.flags.c_contiguous and actual.shape == expected.shape
            assert relative_error(expected, actual) <= 1e-6


def test_channels_last_changes_no_output_bit_of_a_zoo_resnet(lowered) -> None:
    """ResNet-20 lowered by bitfx: the residual chains of its middle and last stages are channels-last (the
    last one ends in the native global average pool, which reads either layout; the first stage's chain
    starts at the float stem conv, which writes NCHW only, so it stays NCHW, with the reason), and its
    outputs are bit-identical to an all-NCHW run."""
    path, x = lowered("resnet20")
    packed = PackedModel(path)
    report = packed.report
    assert len(report.channels_last) == 8 and report.channels_last[-1] == "relu" and len(report.channels_first) == 3
    assert all("needs NCHW" in why or "residual link" in why for why in report.channels_first)
    nchw = PackedModel(path, channels_last=False)
    assert nchw.report.channels_last == nchw.report.channels_first == []
    for _ in range(2):  # the first run and a planned run
        for ours, theirs in zip(packed.run([x.numpy()]), nchw.run([x.numpy()])):
            np.testing.assert_array_equal(ours, theirs)


def test_buffers_are_reused_across_layers() -> None:
    b = NetBuilder((1, 64, 16, 16), seed=5)
    h = "x"
    for _ in range(8):
        h = b.op("Relu", [b.conv(h, 64, 64, 3, pad=1)])
        h = b.op("Sigmoid", [h])
    model, _ = b.build([h])
    packed = PackedModel(model)
    layer_bytes = 64 * 16 * 16 * 4
    assert packed.activation_bytes(b.input(1)) <= 3 * layer_bytes  # 16 intermediate values share ≤ 2 buffers + input


def test_unsupported_ops_are_listed_together_at_load() -> None:
    nodes = [
        helper.make_node("Hardmax", ["x"], ["a"], name="up"),
        helper.make_node("Frobnicate", ["a"], ["b"], name="custom1", domain="acme"),
        helper.make_node("Frobnicate", ["b"], ["c"], name="custom2", domain="acme"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, None)],
        [onnx.numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("acme", 1)])
    with pytest.raises(PackedModelError) as error:
        PackedModel(model)
    message = str(error.value)
    assert "Hardmax (1×, e.g. node 'up')" in message and "acme.Frobnicate (2×" in message and "onnxruntime" in message


def test_unreadable_files_and_bad_inputs_are_clear_errors(tmp_path) -> None:
    with pytest.raises(PackedModelError, match="does not exist"):
        PackedModel(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(PackedModelError, match="not a readable ONNX model"):
        PackedModel(tmp_path / "junk.onnx")
    b = NetBuilder((1, 4, 5, 5))
    packed = PackedModel(b.build([b.binary_conv("x", 4, 8)])[0])
    with pytest.raises(PackedModelError, match="declares"):
        packed.run([np.zeros((1, 3, 5, 5), np.float32)])
    with pytest.raises(PackedModelError, match="takes 1 input"):
        packed.run([])


@pytest.fixture(scope="module")
def lowered(tmp_path_factory: pytest.TempPathFactory):
    """`lowered(name)` -> path of the example model after fuse_bn,binarize and the custom lowering."""

    def get(name: str):
        torch.manual_seed(0)
        model = randomize_batchnorm(getattr(zoo, name)().eval())
        x = torch.randn((2, *model.example_input_shape[1:]), generator=torch.Generator().manual_seed(1))
        gm = Pipeline.from_spec("fuse_bn,binarize").run(capture(model, x)).graph_module
        return export(gm, x, tmp_path_factory.mktemp(name) / f"{name}.onnx", lowering="custom"), x

    return get


@pytest.mark.parametrize("name", zoo.MODELS)
def test_every_example_model_matches_onnxruntime_on_the_same_file(name: str, lowered) -> None:
    path, x = lowered(name)
    packed = PackedModel(path)
    sess = session(path)
    assert (
        packed.report.binary_layers
        == packed.report.ops.get("bitfx.BinaryConv2d", 0) + packed.report.ops.get("bitfx.BinaryGemm", 0)
        > 0
    )
    for batch in (x, x[:1]):  # the dynamic batch dimension: two plans
        for expected, actual in zip(run_session(sess, [batch.numpy()]), packed.run([batch.numpy()])):
            assert actual.shape == expected.shape
            assert relative_error(expected, actual) <= 1e-4
