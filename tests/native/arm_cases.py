"""Random kernel calls of the packed runtime, written to a file for the AArch64 test driver (arm_driver.c).

Each case is one call of a C entry point exactly as the Python binding makes it (kernels.py and
int8_conv.py build the descriptors and the tables: taps, pixels, kc border patterns): the calls of
random operations are recorded while they run on this machine's scalar path, and every argument is
written byte for byte (descriptors as their C structs, arrays as their data) with the output this
machine computed. The output buffer is filled with a poison pattern before the call (except for
bitfx_fill_border, which writes only the border of a buffer it also reads), so a kernel that writes
outside what it owns, or leaves part of its output unwritten, shows up as a difference.

File format (little-endian int64 words): the magic "BITFXARM", the case count, then per case the
function id (FUNCTIONS), `exact` (1: outputs must be bit-identical; 0: float convolutions, compared
within a tolerance), the argument count and each argument as its byte count (−1: a null pointer)
followed by its bytes padded to 8, and last the expected output (the last argument after the call)
the same way.

Usage: python tests/native/arm_cases.py OUT_FILE [--seed N] [--operations N]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from bitfx.backends.packed import call_table, int8_conv, kernels, set_isa, set_threads
from bitfx.backends.packed import kernels as k
from bitfx.backends.packed._native import CALL_KERNELS
from bitfx.backends.packed.int8_conv import Int8Conv
from bitfx.format import packed_words

FUNCTIONS = CALL_KERNELS  # a case names its entry point by its index here (enum bitfx_call_kernel)
# Float convolutions may sum in another order or with fused multiply-adds on another ISA.
INEXACT = {"bitfx_float_conv", "bitfx_float_conv_maxpool"}
POISON = 0xA5


class _Recorder:
    """Stands in for the ctypes library: records each kernel call's arguments and output, then makes it."""

    def __init__(self, real: ctypes.CDLL, arrays: dict[int, np.ndarray], sink: list[bytes]) -> None:
        self.real, self.arrays, self.sink = real, arrays, sink

    def __getattr__(self, name: str):
        function = getattr(self.real, name)
        if name not in FUNCTIONS:
            return function

        def call(*args):
            out = self.arrays[id(args[-1])]
            if name != "bitfx_fill_border":
                _in_memory_order(out).view(np.uint8)[...] = POISON
            record = [struct.pack("<3q", FUNCTIONS.index(name), name not in INEXACT, len(args))]
            record += [_blob(self._bytes(arg)) for arg in args]
            status = function(*args)
            self.sink.append(b"".join(record) + _blob(_in_memory_order(out).tobytes()))
            return status

        return call

    def _bytes(self, arg: object) -> bytes | None:
        if arg is None:
            return None
        if isinstance(arg, ctypes.Structure):  # a descriptor
            return bytes(arg)
        return _in_memory_order(self.arrays[id(arg)]).tobytes()


def _in_memory_order(array: np.ndarray) -> np.ndarray:
    """A C-contiguous view of `array`'s memory: a channels-last float array as the NHWC array it is."""
    return array.transpose(0, 2, 3, 1) if k.is_channels_last(array) else array


def _blob(data: bytes | None) -> bytes:
    if data is None:
        return struct.pack("<q", -1)
    return struct.pack("<q", len(data)) + data + b"\0" * (-len(data) % 8)


@contextlib.contextmanager
def recording(sink: list[bytes]) -> Iterator[None]:
    """Record every kernel call the bindings make (on this machine's scalar path) into `sink`."""
    arrays: dict[int, np.ndarray] = {}
    original = kernels._pointer

    def pointer(array: np.ndarray | None):
        result = original(array)
        if result is not None:
            arrays[id(result)] = array
        return result

    recorder = _Recorder(call_table.lib, arrays, sink)
    saved = [(module, module._pointer) for module in (kernels, int8_conv)]
    try:
        call_table.lib = recorder  # every prepared call (call_table.KernelCall) looks its function up there
        for module in (kernels, int8_conv):
            module._pointer = pointer
        set_isa("scalar")
        set_threads(1)
        yield
    finally:
        call_table.lib = recorder.real
        for module, pointer_function in saved:
            module._pointer = pointer_function
        set_isa(None)
        set_threads(None)


def _channels(rng: np.random.Generator, small: int, large: tuple[int, int]) -> int:
    """A channel count, few or not a multiple of 64."""
    return int(rng.integers(1, small + 1) if rng.random() < 0.4 else rng.integers(*large))


def _input_channels(rng: np.random.Generator) -> int:
    """Input channels per group of a binary convolution: sometimes enough that the reduction (kh·kw·words)
    is longer than the 31 steps between flushes of the byte counters."""
    return int(rng.integers(200, 700)) if rng.random() < 0.2 else _channels(rng, 9, (60, 140))


def _window(rng: np.random.Generator, max_pad: int = 2) -> k.Window:
    kernel = tuple(int(v) for v in rng.integers(1, 4, 2))
    strides = tuple(int(v) for v in rng.integers(1, 3, 2))
    dilations = tuple(int(v) for v in rng.integers(1, 3, 2))
    pads = tuple(int(min(v, kernel[i % 2] - 1)) for i, v in enumerate(rng.integers(0, max_pad + 1, 4)))
    return k.Window(kernel, strides, pads, dilations)


def _size(rng: np.random.Generator, window: k.Window, axis: int) -> int:
    span = window.dilations[axis] * (window.kernel[axis] - 1) + 1 - window.pads[axis] - window.pads[axis + 2]
    return int(rng.integers(max(1, span), 10))


def _floats(rng: np.random.Generator, *shape: int) -> np.ndarray:
    x = rng.normal(size=shape).astype(np.float32)
    x[rng.random(shape) < 0.05] = 0.0  # exact zeros: sign(0) packs as +1
    return x


def _maybe_channels_last(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    """`x` itself, or half the time the same values in channels-last memory (the runtime's NHWC float layout)."""
    if rng.random() < 0.5:
        return x
    out = k.empty_channels_last(x.shape)
    out[...] = x
    return out


def _clamp(rng: np.random.Generator) -> tuple[float, float]:
    return k.NO_CLAMP if rng.random() < 0.5 else (float(rng.uniform(-3, 0)), float(rng.uniform(0.5, 3)))


def binary_conv(rng: np.random.Generator) -> None:
    """A binary convolution on a packed input: groups, every pad value, float (residual, clamp) or packed output."""
    group = int(rng.choice([1, 1, 2, 3]))
    in_per_group, out_per_group = _input_channels(rng), _channels(rng, 9, (30, 100))
    window = _window(rng)
    height, width = _size(rng, window, 0), _size(rng, window, 1)
    pad_value = int(rng.choice([0, 1, -1]))
    batch = int(rng.integers(1, 3))
    x = k.pack(
        _maybe_channels_last(rng, _floats(rng, batch, group * in_per_group, height, width)),
        groups=group,
        border=tuple(p + int(rng.integers(0, 2)) for p in window.pads),
        pad=-1 if pad_value == -1 else 1,
    )
    words = packed_words(in_per_group)
    weights = rng.integers(0, 2**64, (group * out_per_group, *window.kernel, words), dtype=np.uint64)
    conv = k.BinaryConv(
        weights,
        rng.normal(size=group * out_per_group).astype(np.float32),
        rng.normal(size=group * out_per_group).astype(np.float32),
        window=window,
        group=group,
        in_channels=group * in_per_group,
        pad_value=pad_value,
    )
    if group == 1 and rng.random() < 0.4:
        conv.set_packed_output(rng.integers(-conv.k, conv.k + 1, out_per_group), rng.random(out_per_group) < 0.5)
        border = tuple(int(v) for v in rng.integers(0, 2, 4))
        conv(x, packed_border=border, packed_pad=int(rng.choice([1, -1])))
        return
    out_h, out_w = conv.out_size(height, width)
    residual = _floats(rng, batch, group * out_per_group, out_h, out_w) if rng.random() < 0.5 else None
    if residual is not None:
        residual = _maybe_channels_last(rng, residual)  # a channels-last residual makes the output channels-last
    conv(x, residual=residual, clamp=_clamp(rng))


def binary_maxpool(rng: np.random.Generator) -> None:
    """A binary max pool (input border −1), ceil mode sometimes."""
    group = int(rng.choice([1, 2]))
    window = _window(rng, max_pad=1)
    height, width = _size(rng, window, 0), _size(rng, window, 1)
    channels = group * _channels(rng, 9, (60, 140))
    border = tuple(p + 1 for p in window.pads)
    x = k.pack(_floats(rng, 1, channels, height, width), groups=group, border=border, pad=-1)
    ceil_mode = bool(rng.random() < 0.3)
    out_h, out_w = window.out_size(height, width, ceil_mode)
    out = k.PackedTensor.empty(1, channels, out_h, out_w, groups=group, border=(1, 0, 0, 1))
    k.bind_binary_maxpool(x, out, window, ceil_mode)()


def float_conv(rng: np.random.Generator) -> None:
    """A float convolution: groups, pad values, residual, clamp, or fused with a max pool."""
    group = int(rng.choice([1, 1, 2, 3]))
    in_per_group, out_per_group = _channels(rng, 5, (8, 40)), _channels(rng, 9, (10, 70))
    window = _window(rng)
    height, width = _size(rng, window, 0), _size(rng, window, 1)
    conv = k.FloatConv(
        _floats(rng, group * out_per_group, in_per_group, *window.kernel),
        rng.normal(size=group * out_per_group),
        rng.normal(size=group * out_per_group),
        window=window,
        group=group,
        pad_value=float(rng.choice([0.0, 0.0, 0.5])),
    )
    x = _floats(rng, int(rng.integers(1, 3)), group * in_per_group, height, width)
    out_h, out_w = conv.out_size(height, width)
    if rng.random() < 0.3 and min(out_h, out_w) >= 2:
        pool = k.MaxPool(k.Window((2, 2), (2, 2), (0, 0, 1, 1)))
        conv(x, clamp=_clamp(rng), pool=pool, channels_last=bool(rng.random() < 0.5))
        return
    residual = _floats(rng, x.shape[0], group * out_per_group, out_h, out_w) if rng.random() < 0.4 else None
    conv(x, residual=residual, clamp=_clamp(rng))


def float_maxpool(rng: np.random.Generator) -> None:
    window = _window(rng, max_pad=1)
    height, width = _size(rng, window, 0), _size(rng, window, 1)
    x = _floats(rng, 2, int(rng.integers(1, 6)), height, width)
    ceil_mode = bool(rng.random() < 0.3)
    out = np.empty((2, x.shape[1], *window.out_size(height, width, ceil_mode)), np.float32)
    k.bind_float_maxpool(x, out, window, ceil_mode)()


def global_avgpool(rng: np.random.Generator) -> None:
    """The mean of every plane, NCHW or channels-last, 3-D or 4-D input."""
    shape = (int(rng.integers(1, 3)), _channels(rng, 9, (30, 140)), *(int(v) for v in rng.integers(1, 9, 2)))
    x = _maybe_channels_last(rng, _floats(rng, *shape))
    if rng.random() < 0.2:
        x = np.ascontiguousarray(x).reshape(shape[0], shape[1], -1)
    k.bind_global_avgpool(x, np.empty(shape[:2], np.float32))()


def float_gemm(rng: np.random.Generator) -> None:
    k_len, channels = int(rng.integers(1, 200)), int(rng.integers(1, 300))
    bias = rng.normal(size=channels) if rng.random() < 0.7 else None
    alpha, beta = float(rng.uniform(0.5, 2)), float(rng.uniform(0, 2))
    gemm = k.FloatGemm(_floats(rng, k_len, channels), bias, alpha=alpha, beta=beta)
    gemm(_floats(rng, int(rng.integers(1, 4)), k_len))


def int8_convolution(rng: np.random.Generator) -> None:
    """The int8 convolution (its portable row on every non-x86 machine), with or without a fused pool."""
    window = _window(rng)
    window = k.Window(window.kernel, window.strides, window.pads, (window.dilations[0], 1))
    height, width = _size(rng, window, 0), _size(rng, window, 1)
    out_channels = _channels(rng, 9, (10, 80))
    conv = Int8Conv(
        _floats(rng, out_channels, int(rng.integers(1, 5)), *window.kernel),
        rng.normal(size=out_channels),
        window=window,
        input_range=(-2.0, 2.0),
    )
    x = _floats(rng, 1, conv.in_channels, height, width)
    out_h, out_w = conv.out_size(height, width)
    pool = k.MaxPool(k.Window((2, 2), (2, 2))) if rng.random() < 0.3 and min(out_h, out_w) >= 2 else None
    conv(x, clamp=_clamp(rng), pool=pool, channels_last=pool is not None and bool(rng.random() < 0.5))


# Binary convolutions (the NEON tiles) three times as often as the others.
OPERATIONS = (
    binary_conv,
    binary_conv,
    binary_conv,
    binary_maxpool,
    float_conv,
    float_maxpool,
    float_gemm,
    int8_convolution,
    global_avgpool,
)


def write_cases(path: Path, seed: int = 0, operations: int = 240) -> int:
    """Record `operations` random operations (about half binary convolutions) into `path`; returns the case count."""
    rng = np.random.default_rng(seed)
    cases: list[bytes] = []
    with recording(cases):
        for i in range(operations):
            OPERATIONS[i % len(OPERATIONS)](rng)
    path.write_bytes(b"BITFXARM" + struct.pack("<q", len(cases)) + b"".join(cases))
    return len(cases)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--operations", type=int, default=240)
    args = parser.parse_args()
    count = write_cases(args.out, args.seed, args.operations)
    print(f"{count} kernel calls from {args.operations} random operations (seed {args.seed}) -> {args.out}")


if __name__ == "__main__":
    main()
