"""The int8 path for float convolutions (bitfx.backends.packed.int8_conv): the kernel against a
numpy model of the same quantization on every ISA path, equal outputs across paths, the fused max
pool, the executor's opt-in (`int8_float_convs`) and the refusal of bad arguments."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from packed_models import NetBuilder
from test_packed_executor import ort_outputs, relative_error
from test_packed_kernels import SETTINGS, float_conv_reference, pool_windows, use

from bitfx.backends.packed import PackedKernelError, PackedModel, _native, available_isas, get_isa, get_threads, load
from bitfx.backends.packed import kernels as k
from bitfx.backends.packed.int8_conv import Int8Conv
from bitfx.errors import BitfxError

ISAS = available_isas()


@pytest.fixture(autouse=True)
def restore_isa_and_threads():
    isa, threads = get_isa(), get_threads()
    yield
    use(isa, threads)


@st.composite
def int8_cases(draw: st.DrawFn) -> dict:
    """A random group-1 convolution the int8 kernel runs: kernel columns undilated, rows dilated or
    not, asymmetric pads, channel counts around one 64-channel block, rows wide enough for 6-pixel tiles."""
    kh, kw = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    strides = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation_h = draw(st.integers(1, 2))
    pads = (draw(st.integers(0, 3)), draw(st.integers(0, 3)), draw(st.integers(0, 3)), draw(st.integers(0, 3)))
    height = draw(st.integers(max(1, dilation_h * (kh - 1) + 1 - pads[0] - pads[2]), 20))
    width = draw(st.integers(max(1, kw - pads[1] - pads[3]), 40))
    return dict(
        batch=draw(st.integers(1, 2)),
        in_channels=draw(st.integers(1, 5)),
        out_channels=draw(st.sampled_from([1, 7, 64, 70])),
        window=k.Window((kh, kw), strides, pads, (dilation_h, 1)),
        height=height,
        width=width,
        low=draw(st.sampled_from([-2.0, -0.5, 0.0, 0.3])),
        seed=draw(st.integers(0, 2**31)),
    )


def int8_reference(conv: Int8Conv, x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """The same quantization in numpy (float64): u8 codes of x, s8 codes of the weights, their exact
    integer convolution less the zero point's, times the kernel's per-channel multiplier, plus bias."""
    inv, zero = np.float32(conv.inv_scale), np.float32(conv.zero_point)
    codes = np.rint(np.clip(x * inv + zero, 0, 255)) - conv.zero_point  # padding (0.0) is code zero_point
    peak = np.abs(weight).reshape(len(weight), -1).max(axis=1)
    step = np.where(peak > 0, peak.astype(np.float64) / 127, 1.0)  # a code at an exact half rounds as float64 says
    w = np.clip(np.rint(weight.astype(np.float64) / step[:, None, None, None]), -127, 127)
    acc = float_conv_reference(codes, w, conv.window, 1, 0.0)
    return acc * conv.scale[None, :, None, None].astype(np.float64) + conv.bias[None, :, None, None]


@pytest.mark.parametrize("isa", ISAS)
@SETTINGS
@given(case=int8_cases(), threads=st.sampled_from([1, 2]), relu=st.booleans())
def test_int8_conv_matches_the_numpy_quantization(isa, case, threads, relu) -> None:
    use(isa, threads)
    rng = np.random.default_rng(case["seed"])
    x = rng.uniform(case["low"], case["low"] + 2, (case["batch"], case["in_channels"], case["height"], case["width"]))
    x = x.astype(np.float32)
    weight = rng.normal(size=(case["out_channels"], case["in_channels"], *case["window"].kernel)).astype(np.float32)
    weight[0] = 0.0  # a channel of zero weights (its step is 1, not 0)
    bias = rng.normal(size=case["out_channels"]).astype(np.float32)
    conv = Int8Conv(weight, bias, window=case["window"], input_range=(case["low"], case["low"] + 1.5))  # saturates
    clamp = (0.0, np.inf) if relu else k.NO_CLAMP
    expected = np.clip(int8_reference(conv, x, weight), *clamp)
    out = conv(x, clamp=clamp)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(expected).max())))


@SETTINGS
@given(case=int8_cases(), pool=pool_windows(), threads=st.sampled_from([1, 2]))
def test_int8_conv_is_the_same_on_every_path_and_fuses_the_max_pool(case, pool, threads) -> None:
    rng = np.random.default_rng(case["seed"])
    x = rng.normal(size=(case["batch"], case["in_channels"], case["height"], case["width"])).astype(np.float32)
    weight = rng.normal(size=(case["out_channels"], case["in_channels"], *case["window"].kernel)).astype(np.float32)
    conv = Int8Conv(weight, rng.normal(size=case["out_channels"]), window=case["window"], input_range=(-2.0, 2.0))
    try:
        pool.out_size(*conv.out_size(case["height"], case["width"]))
    except BitfxError:
        assume(False)
    outputs = []
    for isa in ISAS:
        use(isa, threads)
        unpooled = conv(x, clamp=(0.0, np.inf))
        pooled = np.empty((*unpooled.shape[:2], *pool.out_size(*unpooled.shape[2:])), np.float32)
        k.bind_float_maxpool(unpooled, pooled, pool.window, pool.ceil_mode)()
        np.testing.assert_array_equal(conv(x, clamp=(0.0, np.inf), pool=pool), pooled)
        np.testing.assert_array_equal(conv(x, clamp=(0.0, np.inf), pool=pool, channels_last=True), pooled)
        outputs.append(unpooled)
    for other in outputs[1:]:
        np.testing.assert_array_equal(other, outputs[0])  # VNNI and portable sums are the same integers


@pytest.mark.skipif("avx2" not in ISAS, reason="the CPU has no AVX2")
@SETTINGS
@given(case=int8_cases(), pool=st.none() | pool_windows(), extreme=st.booleans())
def test_avx2_int8_row_equals_the_portable_one_where_vpmaddubsw_would_saturate(case, pool, extreme) -> None:
    """The AVX2 row (VPMADDWD on 16-bit operands) against the plain loop, bit for bit. `extreme`: every
    input at the top of its range (code 255) and weights of one sign per channel (codes ±127), so a
    pair of taps sums to ±255·127·2, beyond the int16 that VPMADDUBSW saturates at."""
    rng = np.random.default_rng(case["seed"])
    shape = (case["batch"], case["in_channels"], case["height"], case["width"])
    kernel = (case["out_channels"], case["in_channels"], *case["window"].kernel)
    if extreme:
        x = np.full(shape, 5.0, np.float32)
        weight = np.where(np.arange(kernel[0]) % 2 == 0, 1.0, -1.0)[:, None, None, None] * np.ones(kernel)
    else:
        x, weight = rng.normal(size=shape), rng.normal(size=kernel)
    x, weight = x.astype(np.float32), weight.astype(np.float32)
    conv = Int8Conv(weight, window=case["window"], input_range=(-2.0, 2.0))
    if pool is not None:
        try:
            pool.out_size(*conv.out_size(case["height"], case["width"]))
        except BitfxError:
            assume(False)
    outputs = {}
    for isa in ("scalar", "avx2"):
        use(isa, 1)
        outputs[isa] = conv(x, pool=pool)
    np.testing.assert_array_equal(outputs["avx2"], outputs["scalar"])
    if pool is None:
        expected = int8_reference(conv, x, weight)
        np.testing.assert_allclose(outputs["avx2"], expected, rtol=1e-5, atol=1e-5 * max(1.0, np.abs(expected).max()))


def test_int8_stem_is_opt_in_close_to_float_and_reported() -> None:
    b = NetBuilder((1, 3, 40, 36), seed=7)
    h = b.op("Relu", [b.conv("x", 3, 70, 7, stride=2, pad=3)])
    h = b.op("MaxPool", [h], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    h = b.op("Relu", [b.conv(h, 70, 8, 3, pad=1)])  # reads no model input: stays float
    model, twin = b.build([h])
    x = b.input(2)
    (expected,) = ort_outputs(twin, x)
    plain = PackedModel(model)
    assert plain.report.int8_convs == 0 and plain.report.int8_skipped == []
    int8 = load(model, int8_float_convs=x)
    assert int8.report.int8_convs == 1
    assert int8.report.fused_max_pools == 1
    assert len(int8.report.int8_skipped) == 1 and "reads no model input" in int8.report.int8_skipped[0]
    (actual,) = int8.run([x])
    assert 1e-6 < relative_error(expected, actual) < 0.03  # quantized, not float, and close


@pytest.mark.parametrize(
    "value, message",
    [
        ((1.0, 1.0), "low < high"),
        ((0.0, float("nan")), "finite"),
        ((True, 2.0), "range"),
        ("0,1", "range"),
        (np.array([]), "non-empty"),
        (np.array([0.0, np.inf]), "finite"),
        (np.zeros((2, 2)), "low < high"),
    ],
)
def test_bad_int8_ranges_are_refused_before_any_kernel_runs(value, message) -> None:
    b = NetBuilder((1, 3, 8, 8), seed=8)
    model, _ = b.build([b.conv("x", 3, 4, 3, pad=1)])
    with pytest.raises(BitfxError, match=message):
        PackedModel(model, int8_float_convs=value)


def test_int8_kernel_refuses_inconsistent_arguments() -> None:
    window = k.Window((3, 3), pads=(1, 1, 1, 1))
    with pytest.raises(BitfxError, match="dilated"):
        Int8Conv(np.ones((4, 2, 3, 3), np.float32), window=k.Window((3, 3), dilations=(1, 2)), input_range=(0, 1))
    conv = Int8Conv(np.ones((4, 2, 3, 3), np.float32), window=window, input_range=(0, 1))
    with pytest.raises(BitfxError, match="residual"):
        conv.bind(
            np.ones((1, 2, 8, 8), np.float32), np.empty((1, 4, 8, 8), np.float32), residual=np.zeros((1, 4, 8, 8))
        )
    x, out = np.ones((1, 2, 8, 8), np.float32), np.empty((1, 4, 8, 8), np.float32)
    desc = k.conv_desc(conv, x, out, residual=None, clamp=k.NO_CLAMP, pool=None)
    for bad in (_native.Int8Desc(1.0, 300, 1), _native.Int8Desc(1.0, 0, 2), _native.Int8Desc(float("nan"), 0, 1)):
        with pytest.raises(PackedKernelError, match="bitfx_int8_conv .*invalid argument"):
            _native.lib.bitfx_int8_conv(
                ctypes.byref(desc),
                ctypes.byref(bad),
                None,
                k._pointer(x),
                k._pointer(conv.weights),
                k._pointer(conv.correction),
                k._pointer(conv.scale),
                k._pointer(conv.bias),
                k._pointer(out),
            )
