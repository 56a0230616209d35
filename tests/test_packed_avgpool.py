"""The packed runtime's native head and call tables: the global average pool kernel (GlobalAveragePool,
ReduceMean over the last two axes) against numpy and onnxruntime in both layouts, the compile decision
it enables (a network's last stage stays channels-last), ReduceMean over other axes staying on numpy,
and the tables that run a plan's consecutive kernel calls in one C call."""

from __future__ import annotations

import numpy as np
import pytest
from packed_models import NetBuilder
from test_packed_executor import ort_outputs, relative_error

from bitfx.backends.packed import PackedKernelError, PackedModel, set_threads
from bitfx.backends.packed.call_table import CallTable
from bitfx.backends.packed.kernel_steps import GlobalAvgPoolStep
from bitfx.backends.packed.kernels import bind_global_avgpool, empty_channels_last
from bitfx.backends.packed.steps import NumpyStep

EPS = float(np.finfo(np.float32).eps)


def _native_mean(x: np.ndarray, keepdims: bool = False) -> np.ndarray:
    out = np.full(x.shape[:2] + (1,) * (x.ndim - 2) * keepdims, np.nan, np.float32)
    bind_global_avgpool(x, out)()
    return out


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(
    ("shape", "channels_last"),
    [
        ((2, 512, 7, 7), True),
        ((2, 512, 7, 7), False),
        ((3, 70, 5, 9), True),
        ((1, 300, 1, 1), True),
        ((2, 3, 4, 5, 6), False),
    ],
)
def test_kernel_is_the_float64_mean_rounded_once_and_within_float32_noise_of_numpy(
    shape, channels_last, threads
) -> None:
    """The kernel sums in double and rounds once: within one float32 ulp of the float64 mean. numpy's float32
    mean (pairwise sums) differs from the exact mean by rounding noise only, bounded by pixels · eps · mean|x|."""
    set_threads(threads)
    try:
        rng = np.random.default_rng(sum(shape))
        data = (rng.normal(size=shape) * rng.uniform(0.1, 100, shape[:2] + (1,) * (len(shape) - 2))).astype(np.float32)
        x = empty_channels_last(shape) if channels_last else np.empty(shape, np.float32)
        x[...] = data
        ours = _native_mean(x)
    finally:
        set_threads(None)
    axes = tuple(range(2, len(shape)))
    exact = data.astype(np.float64).mean(axis=axes)
    ulp = np.spacing(np.abs(exact).astype(np.float32))
    assert np.all(np.abs(ours - exact) <= ulp)
    pixels = int(np.prod(shape[2:]))
    noise = pixels * EPS * np.abs(data).astype(np.float64).mean(axis=axes) + ulp
    assert np.all(np.abs(ours - data.mean(axis=axes)) <= noise)


def _head(opset: int, op: str, axes: tuple[int, ...] | None, keepdims: int, shape=(1, 16, 7, 5)) -> NetBuilder:
    """x → binary conv (float output, channels-last when its readers allow) → the pooling op → outputs."""
    b = NetBuilder(shape, seed=11, opset=opset)
    h = b.binary_conv("x", shape[1], 70)
    if op == "GlobalAveragePool":
        b.pooled = b.op(op, [h])
    elif opset >= 18:
        b.pooled = b.op(op, [h, b.const(np.array(axes, np.int64))], keepdims=keepdims)
    else:
        b.pooled = b.op(op, [h], axes=list(axes), keepdims=keepdims)
    b.conv_out = h
    return b


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize(
    ("opset", "op", "axes", "keepdims"),
    [
        (17, "GlobalAveragePool", None, 1),
        (17, "ReduceMean", (2, 3), 1),
        (17, "ReduceMean", (-2, -1), 0),
        (18, "ReduceMean", (2, 3), 0),
        (18, "ReduceMean", (-1, -2), 1),
    ],
)
def test_global_pooling_runs_natively_and_matches_onnxruntime(opset, op, axes, keepdims, channels_last) -> None:
    b = _head(opset, op, axes, keepdims)
    flat = b.op("Flatten", [b.pooled])
    logits = b.op("Gemm", [flat, b.const(b.rng.normal(size=(70, 10)).astype(np.float32))])
    model, twin = b.build([b.pooled, logits])
    packed = PackedModel(model, channels_last=channels_last)
    assert any(isinstance(step, GlobalAvgPoolStep) for step in packed.program.steps)
    assert packed.report.channels_last == ([b.conv_out] if channels_last else [])
    for batch in (2, 1, 3):
        x = b.input(batch)
        for _ in range(2):  # the first run and a planned run
            for expected, actual in zip(ort_outputs(twin, x), packed.run([x])):
                assert actual.shape == expected.shape
                assert relative_error(expected, actual) <= 1e-5


@pytest.mark.parametrize(("axes", "keepdims"), [((1,), 1), ((2,), 0), ((1, 2, 3), 1), ((0, 2, 3), 0), ((3,), 1)])
def test_reduce_mean_over_other_axes_stays_on_numpy_and_keeps_its_input_nchw(axes, keepdims) -> None:
    b = _head(18, "ReduceMean", axes, keepdims)
    model, twin = b.build([b.pooled])
    packed = PackedModel(model)
    assert not any(isinstance(step, GlobalAvgPoolStep) for step in packed.program.steps)
    assert packed.report.channels_last == []
    assert "needs NCHW" in packed.report.channels_first[0]
    x = b.input(2)
    for expected, actual in zip(ort_outputs(twin, x), packed.run([x])):
        assert actual.shape == expected.shape
        assert relative_error(expected, actual) <= 1e-5


def test_reduce_mean_over_the_last_two_axes_of_a_3d_input_runs_on_numpy() -> None:
    """(-2, -1) of a 3-D input is not a global pool over H and W: the step computes it with numpy."""
    b = NetBuilder((2, 6, 10), seed=12)
    pooled = b.op("ReduceMean", ["x"], axes=[-2, -1], keepdims=0)
    model, twin = b.build([pooled])
    packed = PackedModel(model)
    (step,) = packed.program.steps
    x = b.input(2)
    assert isinstance(step, GlobalAvgPoolStep) and not step.native(x)
    for _ in range(2):
        np.testing.assert_allclose(packed.run([x])[0], ort_outputs(twin, x)[0], rtol=1e-6, atol=1e-7)


def test_reduce_mean_axes_that_are_not_integers_stay_on_numpy() -> None:
    b = NetBuilder((1, 4, 3, 3), seed=13)
    pooled = b.op("ReduceMean", ["x"], axes=[2.0, 3.0], keepdims=1)
    model, _ = b.build([pooled])
    (step,) = PackedModel(model).program.steps
    assert isinstance(step, NumpyStep)


def test_a_plan_runs_its_consecutive_kernel_calls_from_one_table() -> None:
    """A network of kernel steps is one table per run; a numpy step in between splits it in two."""
    b = _head(17, "GlobalAveragePool", None, 1)
    model, _ = b.build([b.op("Flatten", [b.pooled])])
    packed = PackedModel(model)
    packed.run([b.input(1)])
    (plan,) = packed._plans.values()
    assert [type(runner).__name__ for runner in plan.runners] == ["CallTable"]

    b = NetBuilder((1, 8, 6, 6), seed=14)
    h = b.binary_conv(b.op("Softmax", [b.binary_conv("x", 8, 16)], axis=1), 16, 16)  # not elementwise: numpy
    model, twin = b.build([h])
    packed = PackedModel(model)
    x = b.input(1)
    for _ in range(2):
        np.testing.assert_array_equal(packed.run([x])[0], ort_outputs(twin, x)[0])
    (plan,) = packed._plans.values()
    assert [type(runner).__name__ for runner in plan.runners] == ["CallTable", "function", "CallTable"]


def test_a_failing_table_entry_stops_the_table_and_names_its_step() -> None:
    x = np.ones((1, 4, 2, 2), np.float32)
    first, second = np.zeros(4, np.float32), np.zeros(4, np.float32)
    bad = bind_global_avgpool(x, first)
    bad.args[0].pixels = 0  # an invalid descriptor: the kernel refuses it
    table = CallTable([bind_global_avgpool(x, first), bad, bind_global_avgpool(x, second)], ["a", "b", "c"])
    with pytest.raises(PackedKernelError, match="^b: the packed kernel bitfx_global_avgpool was given an invalid"):
        table()
    np.testing.assert_array_equal(first, 1)
    np.testing.assert_array_equal(second, 0)  # not run
