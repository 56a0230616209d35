"""Property tests of the packed-bit kernels against the plain numpy reference, on every ISA path
this CPU has (scalar, AVX2, AVX-512) and at 1 and 2 threads."""

from __future__ import annotations

import ctypes
import gc
import math
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from onnx import helper

from bitfx.backends.packed import (
    PackedKernelError,
    PackedModel,
    _native,
    available_isas,
    get_isa,
    get_threads,
    set_isa,
    set_threads,
)
from bitfx.backends.packed import kernels as k
from bitfx.backends.packed import reference as ref
from bitfx.errors import BitfxError

ISAS = available_isas()
# BITFX_HYPOTHESIS_EXAMPLES lowers the example count (`./dev sanitize` runs these under the sanitizers).
SETTINGS = settings(
    max_examples=int(os.environ.get("BITFX_HYPOTHESIS_EXAMPLES", 25)),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@pytest.fixture(autouse=True)
def restore_isa_and_threads():
    isa, threads = get_isa(), get_threads()
    yield
    set_isa(isa)
    set_threads(threads)


def use(isa: str, threads: int) -> None:
    set_isa(isa)
    set_threads(threads)


@st.composite
def conv_cases(draw: st.DrawFn) -> dict:
    """A random binary/float convolution: channel counts not multiple of 64, groups, stride,
    dilation, asymmetric pads, odd sizes, batch up to 2."""
    group = draw(st.sampled_from([1, 1, 2, 3]))
    in_per_group = draw(st.one_of(st.integers(1, 9), st.integers(60, 140)))
    out_per_group = draw(st.one_of(st.integers(1, 9), st.integers(30, 70)))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    strides = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    pads = tuple(draw(st.integers(0, 2)) for _ in range(4))
    height = draw(st.integers(max(1, dilation[0] * (kh - 1) + 1 - pads[0] - pads[2]), 9))
    width = draw(st.integers(max(1, dilation[1] * (kw - 1) + 1 - pads[1] - pads[3]), 9))
    return dict(
        batch=draw(st.integers(1, 2)),
        group=group,
        in_channels=group * in_per_group,
        out_channels=group * out_per_group,
        window=k.Window((kh, kw), strides, pads, dilation),
        height=height,
        width=width,
        pad_value=draw(st.sampled_from([0, 1, -1])),
        seed=draw(st.integers(0, 2**31)),
    )


def make_conv(case: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
    rng = np.random.default_rng(case["seed"])
    window = case["window"]
    x = rng.normal(size=(case["batch"], case["in_channels"], case["height"], case["width"])).astype(np.float32)
    x[rng.random(x.shape) < 0.05] = 0.0  # sign(0) = +1
    weight = rng.normal(size=(case["out_channels"], case["in_channels"] // case["group"], *window.kernel)).astype(
        np.float32
    )
    scale = rng.normal(size=case["out_channels"]).astype(np.float32)
    bias = rng.normal(size=case["out_channels"]).astype(np.float32)
    attributes = dict(kernel_shape=window.kernel, strides=window.strides, pads=window.pads, dilations=window.dilations,
                      group=case["group"], in_channels=case["in_channels"], pad_value=case["pad_value"])  # fmt: skip
    return x, weight, ref.pack_conv_weights(weight), scale, bias, attributes


def binary_conv(case: dict, words: np.ndarray, scale: np.ndarray, bias: np.ndarray) -> k.BinaryConv:
    return k.BinaryConv(
        words,
        scale,
        bias,
        window=case["window"],
        group=case["group"],
        in_channels=case["in_channels"],
        pad_value=case["pad_value"],
    )


def channels_last(x: np.ndarray) -> np.ndarray:
    """`x` (NCHW) copied into channels-last (NHWC) memory: the same logical array."""
    out = k.empty_channels_last(x.shape)
    out[...] = x
    return out


def packed_input(x: np.ndarray, case: dict) -> k.PackedTensor:
    return k.pack(x, groups=case["group"], border=case["window"].pads, pad=-1 if case["pad_value"] == -1 else 1)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("isa", ISAS)
def test_binary_conv_every_tile_size_matches_reference(isa, layout) -> None:
    """Output planes of 1 .. 24 pixels and ResNet's 7×7 and 14×14: every tile size of the tiling
    (7×7 = 7 tiles of 7, 14×14 = 21 tiles of 8 and 4 of 7), float output with the fused residual
    and clamp (NCHW, or channels-last output and residual), and packed output; 40 output channels
    (a partial second block)."""
    use(isa, 1)
    sizes = [(1, n) for n in range(1, 25)] + [(7, 7), (14, 14), (3, 5)]
    for index, (height, width) in enumerate(sizes):
        case = dict(batch=1, group=1, in_channels=70, out_channels=40, window=k.Window((3, 3), pads=(1, 1, 1, 1)),
                    height=height, width=width, pad_value=0, seed=index)  # fmt: skip
        x, _, words, scale, bias, attributes = make_conv(case)
        residual = np.random.default_rng(index).normal(size=(1, 40, height, width)).astype(np.float32)
        expected = np.clip(ref.binary_conv2d(x, words, scale, bias, **attributes) + residual, -1.5, 2.0)
        conv = binary_conv(case, words, scale, bias)
        if layout == "channels_last":
            residual = channels_last(residual)
        out = conv(packed_input(x, case), residual=residual, clamp=(-1.5, 2.0))
        assert k.is_channels_last(out) == (layout == "channels_last" and height * width > 1)
        np.testing.assert_array_equal(out, expected, err_msg=f"float, {height}, {width}")
        dots = ref.conv_dots(x, words, **attributes).astype(np.int64)
        threshold, flip = np.random.default_rng(index).integers(-conv.k, conv.k + 1, 40), np.arange(40) % 3 == 0
        conv.set_packed_output(threshold, flip)
        packed = conv(packed_input(x, case), packed_border=(1, 1, 1, 1))
        expected_bits = (dots < threshold[None, :, None, None]) ^ flip[None, :, None, None]
        expected_signs = np.where(expected_bits, -1.0, 1.0)
        np.testing.assert_array_equal(packed.to_signs(), expected_signs, err_msg=f"packed, {height}, {width}")


@pytest.mark.parametrize("isa", ISAS)
@SETTINGS
@given(
    batch=st.integers(1, 2),
    groups=st.sampled_from([1, 2, 3]),
    per_group=st.integers(1, 150),
    height=st.integers(1, 5),
    width=st.integers(1, 21),
    border=st.tuples(*[st.integers(0, 2)] * 4),
    pad=st.sampled_from([1, -1]),
    threads=st.sampled_from([1, 2]),
    seed=st.integers(0, 2**31),
    nhwc=st.booleans(),
)
def test_pack_matches_reference(isa, batch, groups, per_group, height, width, border, pad, threads, seed, nhwc) -> None:
    """Packing NCHW or channels-last (`nhwc`) float input."""
    use(isa, threads)
    x = np.random.default_rng(seed).normal(size=(batch, groups * per_group, height, width)).astype(np.float32)
    x[..., 0] = -0.0  # −0.0 packs as +1
    packed = k.pack(channels_last(x) if nhwc else x, groups=groups, border=border, pad=pad)
    signs = ref.sign(x).transpose(0, 2, 3, 1).reshape(batch, height, width, groups, per_group)
    expected_interior = np.concatenate([ref.pack_signs(signs[..., g, :]) for g in range(groups)], axis=-1)
    np.testing.assert_array_equal(packed.interior(), expected_interior)
    padded = np.pad(ref.sign(x), ((0, 0), (0, 0), (border[0], border[2]), (border[1], border[3])), constant_values=pad)
    np.testing.assert_array_equal(packed.to_signs(), ref.sign(x))
    whole = k.PackedTensor(packed.data, x.shape[1], padded.shape[2], padded.shape[3], groups)
    np.testing.assert_array_equal(whole.to_signs(), padded)


@pytest.mark.parametrize("isa", ISAS)
@SETTINGS
@given(case=conv_cases(), threads=st.sampled_from([1, 2]), fused=st.booleans(), nhwc=st.booleans())
def test_binary_conv_float_output_matches_reference(isa, case, threads, fused, nhwc) -> None:
    """Float output (and residual) in NCHW or channels-last (`nhwc`) memory: the same values."""
    use(isa, threads)
    x, _, words, scale, bias, attributes = make_conv(case)
    expected = ref.binary_conv2d(x, words, scale, bias, **attributes)
    residual, clamp = None, k.NO_CLAMP
    if fused:  # the fused Add + Relu/Clip epilogue
        residual = np.random.default_rng(case["seed"] + 1).normal(size=expected.shape).astype(np.float32)
        clamp = (0.0, math.inf) if case["seed"] % 2 else (-1.5, 2.0)
        expected = np.clip(expected + residual, *clamp)
    out = k.empty_channels_last(expected.shape) if nhwc else np.empty(expected.shape, np.float32)
    residual = channels_last(residual) if nhwc and fused else residual
    binary_conv(case, words, scale, bias).bind(packed_input(x, case), out, residual=residual, clamp=clamp)()
    np.testing.assert_array_equal(out, expected)  # exact: the same float32 operations on exact dot products


@pytest.mark.parametrize("isa", ISAS)
@SETTINGS
@given(
    case=conv_cases(),
    threads=st.sampled_from([1, 2]),
    border=st.tuples(*[st.integers(0, 1)] * 4),
    out_pad=st.sampled_from([1, -1]),
)
def test_binary_conv_packed_output_thresholds(isa, case, threads, border, out_pad) -> None:
    use(isa, threads)
    case = {
        **case,
        "group": 1,
        "in_channels": case["in_channels"] // case["group"],
        "out_channels": case["out_channels"] // case["group"],
    }
    x, _, words, scale, bias, attributes = make_conv(case)
    dots = ref.conv_dots(x, words, **attributes).astype(np.int64)
    rng = np.random.default_rng(case["seed"] + 2)
    conv = binary_conv(case, words, scale, bias)
    limit = conv.k
    threshold = rng.integers(-limit - 1, limit + 2, case["out_channels"])
    threshold[rng.random(case["out_channels"]) < 0.2] = limit + 1  # a channel that is always −1
    flip = rng.random(case["out_channels"]) < 0.5
    conv.set_packed_output(threshold, flip)
    out = conv(packed_input(x, case), packed_border=border, packed_pad=out_pad)
    expected = np.where((dots < threshold[None, :, None, None]) ^ flip[None, :, None, None], -1.0, 1.0)
    np.testing.assert_array_equal(out.to_signs(), expected)
    padded = np.pad(expected, ((0, 0), (0, 0), (border[0], border[2]), (border[1], border[3])), constant_values=out_pad)
    whole = k.PackedTensor(out.data, out.channels, padded.shape[2], padded.shape[3])
    np.testing.assert_array_equal(whole.to_signs(), padded)


@pytest.mark.parametrize("isa", ISAS)
@SETTINGS
@given(
    batch=st.integers(1, 2),
    channels=st.integers(1, 150),
    height=st.integers(1, 9),
    width=st.integers(1, 9),
    kernel=st.integers(1, 3),
    stride=st.integers(1, 3),
    pad=st.integers(0, 1),
    dilation=st.integers(1, 2),
    ceil_mode=st.booleans(),
    threads=st.sampled_from([1, 2]),
    seed=st.integers(0, 2**31),
)
def test_max_pools_match_reference(
    isa, batch, channels, height, width, kernel, stride, pad, dilation, ceil_mode, threads, seed
) -> None:
    """Float max pool against numpy, and the packed one against sign(float max pool): they commute."""
    use(isa, threads)
    span = (kernel - 1) * dilation + 1
    assume(2 * pad <= span - 1 and span <= min(height, width) + 2 * pad)
    window = k.Window((kernel, kernel), (stride, stride), (pad,) * 4, (dilation, dilation))
    x = np.random.default_rng(seed).normal(size=(batch, channels, height, width)).astype(np.float32)
    out_h, out_w = window.out_size(height, width, ceil_mode)
    pooled = np.empty((batch, channels, out_h, out_w), np.float32)
    k.bind_float_maxpool(x, pooled, window, ceil_mode)()
    extra = stride - 1 if ceil_mode else 0
    padded = np.pad(x, ((0, 0), (0, 0), (pad, pad + extra), (pad, pad + extra)), constant_values=-np.inf)
    for i in range(out_h):
        for j in range(out_w):
            patch = padded[:, :, i * stride : i * stride + span : dilation, j * stride : j * stride + span : dilation]
            np.testing.assert_array_equal(pooled[:, :, i, j], patch.max(axis=(2, 3)))
    packed = k.pack(x, border=(pad, pad, pad + extra, pad + extra), pad=-1)
    out = k.PackedTensor.empty(batch, channels, out_h, out_w)
    k.bind_binary_maxpool(packed, out, window, ceil_mode)()
    np.testing.assert_array_equal(out.to_signs(), ref.sign(pooled))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("width", [112, 1030])
def test_float_max_pool_on_long_rows_matches_reference(isa, width) -> None:
    """The stem's 3×3/2 pool on rows reduced row-first (≤ 1024 floats) and on longer rows."""
    use(isa, 2)
    x = np.random.default_rng(width).normal(size=(1, 3, 7, width)).astype(np.float32)
    window = k.Window((3, 3), (2, 2), (1, 1, 1, 1))
    out_h, out_w = window.out_size(7, width)
    pooled = np.empty((1, 3, out_h, out_w), np.float32)
    k.bind_float_maxpool(x, pooled, window)()
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    expected = np.stack(
        [np.stack([padded[:, :, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3].max(axis=(2, 3)) for j in range(out_w)], -1)
         for i in range(out_h)],
        -2,
    )  # fmt: skip
    np.testing.assert_array_equal(pooled, expected)


def float_conv_reference(
    x: np.ndarray, weight: np.ndarray, window: k.Window, group: int, pad_value: float
) -> np.ndarray:
    top, left, bottom, right = window.pads
    padded = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=pad_value)
    (kh, kw), (sh, sw), (dh, dw) = window.kernel, window.strides, window.dilations
    out_h, out_w = window.out_size(x.shape[2], x.shape[3])
    per_in, per_out = x.shape[1] // group, weight.shape[0] // group
    out = np.zeros((x.shape[0], weight.shape[0], out_h, out_w))
    for g in range(group):
        for i in range(kh):
            for j in range(kw):
                patch = padded[
                    :,
                    g * per_in : (g + 1) * per_in,
                    i * dh : i * dh + sh * (out_h - 1) + 1 : sh,
                    j * dw : j * dw + sw * (out_w - 1) + 1 : sw,
                ]
                out[:, g * per_out : (g + 1) * per_out] += np.einsum(
                    "nchw,oc->nohw", patch, weight[g * per_out : (g + 1) * per_out, :, i, j]
                )
    return out


@pytest.mark.parametrize("isa", ISAS)
@SETTINGS
@given(case=conv_cases(), threads=st.sampled_from([1, 2]), fused=st.booleans())
def test_float_conv_matches_reference(isa, case, threads, fused) -> None:
    use(isa, threads)
    rng = np.random.default_rng(case["seed"])
    x, weight, _, scale, bias, _ = make_conv(case)
    pad_value = float(case["pad_value"])
    expected = (
        float_conv_reference(x, weight, case["window"], case["group"], pad_value) * scale[None, :, None, None]
        + bias[None, :, None, None]
    )
    residual, clamp = None, k.NO_CLAMP
    # Float32 sums of up to thousands of products differ with the order of summation: the tolerance is
    # relative to the largest value before the clamp, which a clamp to (0, 6) would otherwise hide.
    magnitude = float(np.abs(expected).max())
    if fused:
        residual = rng.normal(size=expected.shape).astype(np.float32)
        clamp = (0.0, 6.0)
        magnitude = float(np.abs(expected + residual).max())
        expected = np.clip(expected + residual, *clamp)
    conv = k.FloatConv(weight, bias, scale, window=case["window"], group=case["group"], pad_value=pad_value)
    out = conv(x, residual=residual, clamp=clamp)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5 * max(1.0, magnitude))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(
    "in_channels, out_channels, kernel, stride, pads, size",
    [
        (3, 64, 7, 2, (3, 3, 3, 3), (45, 38)),
        (2, 70, 3, 1, (1, 0, 2, 1), (9, 31)),
        (5, 16, 5, 3, (0, 2, 1, 0), (20, 33)),
    ],
)
def test_float_conv_on_wide_rows_matches_reference(isa, threads, in_channels, out_channels, kernel, stride, pads, size):
    """Rows wide enough for the direct kernel's 6-pixel tiles, a stem-like 7×7/2 conv and channel
    counts that are not a multiple of its 64-channel blocks, with the fused epilogue."""
    use(isa, threads)
    rng = np.random.default_rng(in_channels * 100 + out_channels)
    window = k.Window((kernel, kernel), (stride, stride), pads)
    x = rng.normal(size=(2, in_channels, *size)).astype(np.float32)
    weight = rng.normal(size=(out_channels, in_channels, kernel, kernel)).astype(np.float32)
    scale, bias = rng.uniform(0.5, 2, out_channels).astype(np.float32), rng.normal(size=out_channels).astype(np.float32)
    expected = float_conv_reference(x, weight, window, 1, 0.0) * scale[None, :, None, None] + bias[None, :, None, None]
    residual = rng.normal(size=expected.shape).astype(np.float32)
    expected = np.clip(expected + residual, 0.0, 6.0)
    out = k.FloatConv(weight, bias, scale, window=window)(x, residual=residual, clamp=(0.0, 6.0))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(expected).max())))


@st.composite
def pool_windows(draw: st.DrawFn) -> k.MaxPool:
    """A random 2-D max pool: kernel 1..4, stride 1..3, dilation 1..2, pads below the kernel, ceil_mode."""
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    pads = tuple(draw(st.integers(0, kernel[i % 2] - 1)) for i in range(4))
    strides = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilations = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    return k.MaxPool(k.Window(kernel, strides, pads, dilations), draw(st.booleans()))


@pytest.mark.parametrize("isa", ISAS)
@SETTINGS
@given(
    case=conv_cases(),
    pool=pool_windows(),
    wide=st.booleans(),
    out_channels=st.sampled_from([None, 70, 130]),
    threads=st.sampled_from([1, 2]),
    nhwc=st.booleans(),
)
def test_conv_fused_with_max_pool_equals_conv_then_pool(isa, case, pool, wide, out_channels, threads, nhwc) -> None:
    """The fused stem (one pass) gives exactly the float conv followed by the float max pool, on
    random shapes, paddings, strides and dilations of both, including rows wide enough for the
    direct kernel's tiles and channel counts past one 64-channel block; its output NCHW or
    channels-last (`nhwc`)."""
    use(isa, threads)
    rng = np.random.default_rng(case["seed"])
    x, weight, _, scale, bias, _ = make_conv(case)
    if wide:
        x = rng.normal(size=(x.shape[0], x.shape[1], x.shape[2] + 9, 40)).astype(np.float32)
    if out_channels is not None:
        out_channels *= case["group"]
        weight = rng.normal(size=(out_channels, *weight.shape[1:])).astype(np.float32)
        scale, bias = (
            rng.uniform(0.5, 2, out_channels).astype(np.float32),
            rng.normal(size=out_channels).astype(np.float32),
        )
    conv = k.FloatConv(
        weight, bias, scale, window=case["window"], group=case["group"], pad_value=float(case["pad_value"])
    )
    try:
        out_size = conv.out_size(*x.shape[2:])
        pool.out_size(*out_size)
    except BitfxError:
        assume(False)
    clamp = (0.0, 6.0) if case["seed"] % 2 else k.NO_CLAMP
    unpooled = conv(x, clamp=clamp)
    expected = np.empty((*unpooled.shape[:2], *pool.out_size(*out_size)), np.float32)
    k.bind_float_maxpool(unpooled, expected, pool.window, pool.ceil_mode)()
    np.testing.assert_array_equal(conv(x, clamp=clamp, pool=pool, channels_last=nhwc), expected)


def test_conv_fused_with_max_pool_refuses_a_residual_and_a_wrong_output() -> None:
    weight = np.ones((4, 2, 3, 3), np.float32)
    conv = k.FloatConv(weight, window=k.Window((3, 3), pads=(1, 1, 1, 1)))
    pool = k.MaxPool(k.Window((2, 2), (2, 2)))
    x = np.ones((1, 2, 8, 8), np.float32)
    with pytest.raises(BitfxError, match="takes no residual"):
        conv.bind(x, np.empty((1, 4, 4, 4), np.float32), residual=np.zeros((1, 4, 4, 4), np.float32), pool=pool)
    with pytest.raises(BitfxError, match=r"\(1, 4, 4, 4\)"):
        conv.bind(x, np.empty((1, 4, 8, 8), np.float32), pool=pool)
    with pytest.raises(BitfxError, match="channels-last output only when fused"):
        conv.bind(x, k.empty_channels_last((1, 4, 8, 8)))


def test_a_residual_in_the_other_layout_than_the_output_is_refused() -> None:
    """The binary convolution reads its residual in its output's layout; a mix is an error, not a misread."""
    conv = k.BinaryConv(np.zeros((8, 3, 3, 1), np.uint64), np.ones(8, np.float32), np.zeros(8, np.float32),
                        window=k.Window((3, 3), pads=(1, 1, 1, 1)), group=1, in_channels=8, pad_value=0)  # fmt: skip
    x = k.pack(np.ones((1, 8, 5, 5), np.float32), border=(1, 1, 1, 1))
    for out, residual in (
        (np.empty((1, 8, 5, 5), np.float32), k.empty_channels_last((1, 8, 5, 5))),
        (k.empty_channels_last((1, 8, 5, 5)), np.zeros((1, 8, 5, 5), np.float32)),
    ):
        with pytest.raises(BitfxError, match="in the float output's layout"):
            conv.bind(x, out, residual=residual)


def test_isa_can_be_forced_and_refuses_unknown_names() -> None:
    for isa in ISAS:
        set_isa(isa)
        assert get_isa() == isa
    with pytest.raises(BitfxError, match="unknown instruction set"):
        set_isa("sse9")
    set_threads(1)
    assert get_threads() == 1
    with pytest.raises(BitfxError, match="at least 1"):
        set_threads(0)


def test_environment_forces_the_isa_and_threads() -> None:
    env = {**os.environ, "BITFX_PACKED_ISA": "scalar", "BITFX_PACKED_THREADS": "1"}
    code = "from bitfx.backends.packed import get_isa, get_threads; print(get_isa(), get_threads())"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["scalar", "1"]


def test_popcount_peak_is_measured() -> None:
    assert k.popcount_peak(0.01) > 1e9  # any x86-64 core does over a billion bit-MACs per second


def test_bad_shapes_are_refused_with_the_reason() -> None:
    words = ref.pack_conv_weights(np.ones((4, 3, 3, 3), np.float32))
    with pytest.raises(BitfxError, match="need 4×3×3×1"):
        k.BinaryConv(
            words[:, :2], np.ones(4), np.zeros(4), window=k.Window((3, 3)), group=1, in_channels=3, pad_value=0
        )
    conv = k.BinaryConv(
        words,
        np.ones(4, np.float32),
        np.zeros(4, np.float32),
        window=k.Window((3, 3), pads=(1, 1, 1, 1)),
        group=1,
        in_channels=3,
        pad_value=0,
    )
    with pytest.raises(BitfxError, match="border"):
        conv(k.pack(np.ones((1, 3, 5, 5), np.float32)))


@pytest.mark.parametrize("isa", ISAS)
def test_bound_calls_keep_their_arrays_alive(isa) -> None:
    """A bound call points into the kernel's weights, scales and biases and into its input and
    output: dropping the kernel object and every other reference, collecting and reusing the
    freed memory must not change what the call computes."""
    use(isa, 1)
    rng = np.random.default_rng(7)
    weight = rng.normal(size=(40, 70, 3, 3)).astype(np.float32)
    scale, bias = rng.normal(size=40).astype(np.float32), rng.normal(size=40).astype(np.float32)
    x = rng.normal(size=(2, 70, 6, 6)).astype(np.float32)
    rows = rng.normal(size=(2, 630)).astype(np.float32)
    window, border = k.Window((3, 3), pads=(1, 1, 1, 1)), (1, 1, 1, 1)
    binary = k.BinaryConv(
        ref.pack_conv_weights(weight), scale, bias, window=window, group=1, in_channels=70, pad_value=0
    )
    float_conv = k.FloatConv(weight, bias, scale, window=window)
    gemm = k.FloatGemm(weight.reshape(40, -1), bias, transposed=True)
    expected = [binary(k.pack(x, border=border)), float_conv(x), gemm(rows)]
    outputs = [np.zeros_like(e) for e in expected]
    calls = [
        binary.bind(k.pack(x, border=border), outputs[0]),
        float_conv.bind(x.copy(), outputs[1]),
        gemm.bind(rows.copy(), outputs[2]),
    ]
    del binary, float_conv, gemm, weight, scale, bias, x, rows
    gc.collect()
    junk = [np.full(size, 0xA5, np.uint8) for size in np.geomspace(16, 1 << 17, 400).astype(int) for _ in range(3)]
    for call in calls:
        call()
    del junk
    for out, want in zip(outputs, expected):
        np.testing.assert_array_equal(out, want)


def test_native_calls_are_typed_and_a_failed_call_raises() -> None:
    desc = _native.FloatGemmDesc(1, 4, 4, 0, 1.0, 0.0)
    with pytest.raises(PackedKernelError, match="bitfx_float_gemm .*invalid argument"):
        _native.lib.bitfx_float_gemm(ctypes.byref(desc), None, None, None, None)
    words = np.zeros(4, np.uint64)
    with pytest.raises(ctypes.ArgumentError):  # a uint64 array where the prototype wants float*
        _native.lib.bitfx_float_gemm(
            ctypes.byref(desc), words.ctypes.data_as(ctypes.POINTER(ctypes.c_uint64)), None, None, None
        )


@pytest.mark.parametrize("count", [0, -3, 1025, 2**40, True, False, 2.0, "4", np.float32(2)])
def test_thread_counts_outside_one_to_max_are_refused(count: object) -> None:
    set_threads(1)
    with pytest.raises(BitfxError, match="thread count must be"):
        set_threads(count)
    assert get_threads() == 1
    with pytest.raises(BitfxError, match="thread count must be"):
        PackedModel(_relu_model(), threads=count)


def test_thread_counts_in_range_are_taken() -> None:
    for count in (1, np.int64(2), _native.MAX_THREADS):
        set_threads(count)
        assert get_threads() == int(count)
    set_threads(None)


def _relu_model() -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
