"""The prepared kernels: the compiled C kernels (bound in `_native.py`) as numpy-level
operations on packed tensors: packing, binary and float convolution, Gemm, max pooling, and the
popcount peak. The executor's steps (`kernel_steps.py`) run these.

Each operation has a `bind(...)` form that checks shapes once and returns a zero-argument
callable writing into fixed buffers (what the executor runs every inference), and a plain
call form that allocates its output (for tests and benchmarks). A bound call is a `KernelCall`
(or a `CallSequence` of them, call_table.py) that holds a reference to every array and descriptor
it points into, so it stays valid after the kernel object, its inputs and its outputs are dropped
by the caller; a plan runs consecutive ones from one table.
"""

from __future__ import annotations

import ctypes
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from bitfx.backends.packed._native import (
    BLOCK,
    FLOAT_BLOCK,
    FLOAT_TILE,
    OUT_FLOAT,
    OUT_PACKED,
    AvgPoolDesc,
    BinaryConvDesc,
    BinaryMaxPoolDesc,
    FloatConvDesc,
    FloatGemmDesc,
    FloatMaxPoolDesc,
    PackDesc,
    PackedGeom,
    lib,
)
from bitfx.backends.packed.call_table import CallSequence, KernelCall
from bitfx.errors import BitfxError
from bitfx.format import packed_words, real_bits_mask, unpack_signs

if TYPE_CHECKING:
    from bitfx.backends.packed.int8_conv import Int8Conv

Pads = tuple[int, int, int, int]  # top, left, bottom, right
NO_CLAMP = (-math.inf, math.inf)
_CTYPES = {
    np.dtype(np.uint64): ctypes.c_uint64,
    np.dtype(np.int64): ctypes.c_int64,
    np.dtype(np.int32): ctypes.c_int32,
    np.dtype(np.int8): ctypes.c_int8,
    np.dtype(np.uint32): ctypes.c_uint32,
    np.dtype(np.float32): ctypes.c_float,
}


def empty_channels_last(shape: tuple[int, int, int, int]) -> np.ndarray:
    """An uninitialised float32 array of NCHW `shape` whose memory is channels-last (NHWC): every numpy
    operation sees the logical NCHW array, the kernels that read or write NHWC see a pixel's channels
    contiguous."""
    n, c, h, w = shape
    return np.empty((n, h, w, c), np.float32).transpose(0, 3, 1, 2)


def is_channels_last(x: np.ndarray) -> bool:
    """Whether `x` is a 4-D array whose memory is dense channels-last (NHWC) and not also dense NCHW
    (for which both layouts are the same memory)."""
    return x.ndim == 4 and not x.flags.c_contiguous and x.transpose(0, 2, 3, 1).flags.c_contiguous


def _pointer(array: np.ndarray | None) -> ctypes._Pointer | None:
    """A typed pointer to the data of a C-contiguous or channels-last array (None for None); the ctypes
    prototypes reject a pointer of the wrong element type, and the pointer holds a reference to `array`.
    Callers pass a channels-last array only to a kernel told so (`_float_layout`)."""
    if array is None:
        return None
    if not (array.flags.c_contiguous or is_channels_last(array)) or array.dtype not in _CTYPES:
        raise BitfxError(
            f"a kernel argument must be a C-contiguous array of {sorted(map(str, _CTYPES))}, got {array.dtype}"
        )
    return array.ctypes.data_as(ctypes.POINTER(_CTYPES[array.dtype]))


@dataclass(frozen=True)
class Window:
    """The sliding window of a 2-D convolution or pooling."""

    kernel: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    pads: Pads = (0, 0, 0, 0)
    dilations: tuple[int, int] = (1, 1)

    def out_size(self, height: int, width: int, ceil_mode: bool = False) -> tuple[int, int]:
        """Output height and width (PyTorch / ONNX formula; `ceil_mode` as ONNX pooling)."""
        sizes = []
        for size, k, s, d, p0, p1 in zip(
            (height, width), self.kernel, self.strides, self.dilations, self.pads[:2], self.pads[2:]
        ):
            span = size + p0 + p1 - d * (k - 1) - 1
            out = (-(-span // s) if ceil_mode else span // s) + 1
            if ceil_mode and (out - 1) * s >= size + p0:
                out -= 1  # the last window must start inside the image or its left padding
            sizes.append(out)
        if min(sizes) < 1:
            raise BitfxError(f"a {self.kernel} window with pads {self.pads} does not fit a {height}×{width} input")
        return sizes[0], sizes[1]

    def c_fields(self) -> tuple[int, int, int, int, int, int]:
        """Kernel, strides and dilations in the order the C descriptors declare them: kh, kw, sh, sw, dh, dw."""
        return (*self.kernel, *self.strides, *self.dilations)

    def rows_read(self, out_size: int, axis: int) -> int:
        """How many padded input rows (axis 0) or columns (axis 1) the outputs read."""
        return (out_size - 1) * self.strides[axis] + (self.kernel[axis] - 1) * self.dilations[axis] + 1


@dataclass
class PackedTensor:
    """Packed ±1 activations: `data` is batch × (top + height + bottom) × (left + width + right)
    × words uint64, NHWC, with a border holding the padding value `pad` (+1 or −1)."""

    data: np.ndarray
    channels: int
    height: int
    width: int
    groups: int = 1
    border: Pads = (0, 0, 0, 0)
    pad: int = 1

    @classmethod
    def empty(
        cls,
        batch: int,
        channels: int,
        height: int,
        width: int,
        *,
        groups: int = 1,
        border: Pads = (0, 0, 0, 0),
        pad: int = 1,
    ) -> PackedTensor:
        if channels % groups:
            raise BitfxError(f"{channels} channels cannot be split into {groups} groups")
        words = groups * packed_words(channels // groups)
        shape = (batch, border[0] + height + border[2], border[1] + width + border[3], words)
        return cls(np.empty(shape, np.uint64), channels, height, width, groups, tuple(border), pad)

    @property
    def batch(self) -> int:
        return self.data.shape[0]

    @property
    def group_words(self) -> int:
        return packed_words(self.channels // self.groups)

    def geom(self) -> PackedGeom:
        return PackedGeom(self.batch, self.height, self.width, *self.border, self.data.shape[3])

    def pad_pixel(self) -> np.ndarray:
        """The words of one border pixel: zeros for +1, the real channels' bits for −1."""
        if self.pad == 1:
            return np.zeros(self.data.shape[3], np.uint64)
        return np.tile(real_bits_mask(self.channels // self.groups), self.groups)

    def fill_border(self) -> None:
        self.fill_border_call()()

    def fill_border_call(self) -> KernelCall:
        """The call that writes the padding value's bits into the border."""
        return KernelCall("bitfx_fill_border", self.geom(), _pointer(self.pad_pixel()), _pointer(self.data))

    def interior(self) -> np.ndarray:
        top, left = self.border[:2]
        return self.data[:, top : top + self.height, left : left + self.width]

    def to_signs(self) -> np.ndarray:
        """The ±1 values as float32 NCHW (for checks and debugging)."""
        per_group, words = self.channels // self.groups, self.group_words
        interior = self.interior()
        planes = []
        for g in range(self.groups):
            planes.append(unpack_signs(interior[..., g * words : (g + 1) * words], per_group))
        return np.concatenate(planes, axis=-1).transpose(0, 3, 1, 2)


def aligned(array: np.ndarray, alignment: int = 64) -> np.ndarray:
    """A C-contiguous copy of `array` starting on an `alignment`-byte boundary (whole-vector loads
    never straddle cache lines)."""
    array = np.asarray(array)
    raw = np.empty(array.nbytes + alignment, np.uint8)
    start = -raw.ctypes.data % alignment
    out = raw[start : start + array.nbytes].view(array.dtype).reshape(array.shape)
    out[...] = array
    return out


def _check_float(x: np.ndarray, what: str, ndim: int = 4) -> None:
    if x.dtype != np.float32 or x.ndim != ndim or not x.flags.c_contiguous:
        raise BitfxError(f"{what} must be a C-contiguous float32 array with {ndim} dimensions, got {x.dtype} {x.shape}")


def _float_layout(x: np.ndarray, what: str) -> bool:
    """For a kernel that reads or writes either layout: whether the 4-D float32 `x` is channels-last
    (else it must be C-contiguous NCHW)."""
    if x.dtype == np.float32 and is_channels_last(x):
        return True
    _check_float(x, what)
    return False


def bind_pack(x: np.ndarray, out: PackedTensor) -> Callable[[], None]:
    """sign(x) of a float NCHW array (NCHW or channels-last memory) into `out` (bit 1 where x < 0),
    border refilled each call."""
    channels_last = _float_layout(x, "the input to pack")
    if x.shape != (out.batch, out.channels, out.height, out.width):
        raise BitfxError(
            f"cannot pack a {x.shape} array into a packed tensor of {out.batch}×{out.channels}×{out.height}×{out.width}"
        )
    desc = PackDesc(out.channels, out.groups, out.group_words, out.geom(), channels_last)
    pack = KernelCall("bitfx_pack", desc, _pointer(x), _pointer(out.data), keep=(x, out))
    return CallSequence([pack, out.fill_border_call()]) if any(out.border) else pack


def pack(x: np.ndarray, *, groups: int = 1, border: Pads = (0, 0, 0, 0), pad: int = 1) -> PackedTensor:
    """Pack float NCHW activations (sign, bit 1 = −1) into a new packed tensor (a channels-last float32
    array is read as it is)."""
    if not (x.dtype == np.float32 and is_channels_last(x)):
        x = np.ascontiguousarray(x, dtype=np.float32)
    out = PackedTensor.empty(x.shape[0], x.shape[1], x.shape[2], x.shape[3], groups=groups, border=border, pad=pad)
    bind_pack(x, out)()
    return out


class BinaryConv:
    """A prepared XNOR-popcount convolution (the `bitfx.BinaryConv2d` contract, docs/binary-format.md).

    `weights` is C_out × kh × kw × words uint64 (packed sign(W) of each group's channels).
    Output y = scale·d + bias with d the exact ±1 dot product, `pad_value` 0 (zero padding,
    corrected exactly at border pixels) or ±1 (the input padded with that value). After
    `set_packed_output(threshold, flip)` it writes bits (d < threshold) XOR flip instead.
    """

    def __init__(
        self,
        weights: np.ndarray,
        scale: np.ndarray,
        bias: np.ndarray,
        *,
        window: Window,
        group: int,
        in_channels: int,
        pad_value: int,
    ) -> None:
        if weights.dtype != np.uint64 or weights.ndim != 4:
            raise BitfxError(
                f"binary conv weights must be a C_out×kh×kw×words uint64 array, got {weights.dtype} {weights.shape}"
            )
        out_channels = weights.shape[0]
        if in_channels % group or out_channels % group:
            raise BitfxError(f"group={group} must divide in_channels={in_channels} and out_channels={out_channels}")
        per_group = in_channels // group
        if weights.shape[1:] != (*window.kernel, packed_words(per_group)):
            raise BitfxError(
                f"binary conv weights have shape {weights.shape}; "
                f"kernel {window.kernel} and {per_group} input channels per group "
                f"need {out_channels}×{window.kernel[0]}×{window.kernel[1]}×{packed_words(per_group)}"
            )
        if pad_value not in (0, 1, -1):
            raise BitfxError(f"pad_value must be 0, 1 or -1, got {pad_value}")
        for name, value in (("scale", scale), ("bias", bias)):
            if np.shape(value) != (out_channels,):
                raise BitfxError(
                    f"{name} must have one value per output channel ({out_channels}), got shape {np.shape(value)}"
                )
        self.window, self.group, self.in_channels, self.out_channels, self.pad_value = (
            window,
            group,
            in_channels,
            out_channels,
            pad_value,
        )
        self.group_words = packed_words(per_group)
        self.taps = window.kernel[0] * window.kernel[1]
        self.k = self.taps * per_group  # bits per filter = the largest |d|
        out_per_group = out_channels // group
        self.blocks = -(-out_per_group // BLOCK)
        weights = weights & real_bits_mask(per_group)  # bits past the real channels must not count
        # Σ_c w_c per (channel, kh, kw): what a +1 padded tap adds
        self.tap_sums = unpack_signs(weights, per_group).astype(np.int64).sum(axis=-1)
        self.weights = aligned(self._blocked(weights.reshape(group, out_per_group, -1)).transpose(0, 1, 3, 2))
        self.scale = self._lanes(np.asarray(scale, np.float32), np.float32)
        self.bias = self._lanes(np.asarray(bias, np.float32), np.float32)
        self.threshold: np.ndarray | None = None
        self.flip: np.ndarray | None = None
        self._tables: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    def _blocked(self, per_group: np.ndarray) -> np.ndarray:
        """group × C_out/group × ... → group × blocks × BLOCK × ..., zero-padded channels."""
        shape = per_group.shape
        padded = np.zeros((shape[0], self.blocks * BLOCK, *shape[2:]), per_group.dtype)
        padded[:, : shape[1]] = per_group
        return padded.reshape(shape[0], self.blocks, BLOCK, *shape[2:])

    def _lanes(self, per_channel: np.ndarray, dtype: type) -> np.ndarray:
        return aligned(self._blocked(per_channel.reshape(self.group, -1)).reshape(-1).astype(dtype))

    def set_packed_output(self, threshold: np.ndarray, flip: np.ndarray) -> None:
        """Emit bits (d < threshold[c]) XOR flip[c] per output channel instead of floats (group 1 only)."""
        if self.group != 1:
            raise BitfxError("packed output needs a convolution with group=1")
        threshold = np.asarray(threshold, np.int64)
        flip = np.asarray(flip, bool)
        lanes = np.full(self.blocks * BLOCK, np.iinfo(np.int64).min, np.int64)  # padded channels: bit 0
        lanes[: self.out_channels] = threshold
        flips = np.zeros(self.blocks * BLOCK, np.uint64)
        flips[: self.out_channels] = flip
        self.threshold = aligned(lanes)
        self.flip = (
            (flips.reshape(self.blocks, BLOCK) << np.arange(BLOCK, dtype=np.uint64)).sum(axis=1).astype(np.uint32)
        )

    def out_size(self, height: int, width: int) -> tuple[int, int]:
        return self.window.out_size(height, width)

    def tables(self, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """(pattern of each output pixel, K − correction per pattern and channel lane) for an input size."""
        key = (height, width)
        if key not in self._tables:
            self._tables[key] = self._border_tables(height, width)
        return self._tables[key]

    def _border_tables(self, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        out_h, out_w = self.out_size(height, width)
        lanes = self.group * self.blocks * BLOCK
        if self.pad_value != 0:
            return np.zeros(out_h * out_w, np.int32), aligned(np.full((1, lanes), self.k, np.int64))
        (kh, kw), (sh, sw), (dh, dw) = self.window.kernel, self.window.strides, self.window.dilations
        top, left = self.window.pads[:2]
        rows = np.arange(out_h)[:, None] * sh - top + np.arange(kh)[None, :] * dh
        cols = np.arange(out_w)[:, None] * sw - left + np.arange(kw)[None, :] * dw
        row_kinds, row_id = np.unique((rows >= 0) & (rows < height), axis=0, return_inverse=True)
        col_kinds, col_id = np.unique((cols >= 0) & (cols < width), axis=0, return_inverse=True)
        pattern = (
            (row_id.reshape(-1)[:, None] * len(col_kinds) + col_id.reshape(-1)[None, :]).reshape(-1).astype(np.int32)
        )
        padded_taps = ~(row_kinds[:, None, :, None] & col_kinds[None, :, None, :])  # rows × cols × kh × kw
        correction = np.einsum("rcij,oij->rco", padded_taps.astype(np.int64), self.tap_sums).reshape(
            -1, self.out_channels
        )
        kc = np.stack([self._lanes(self.k - c, np.int64) for c in correction])
        return pattern, aligned(kc)

    def _taps(self, x: PackedTensor) -> np.ndarray:
        """Word offset of every reduction word (kh, kw, word) from a pixel's first input word."""
        (kh, kw), (dh, dw) = self.window.kernel, self.window.dilations
        rows = np.arange(kh)[:, None, None] * dh * x.data.shape[2]
        cols = np.arange(kw)[None, :, None] * dw
        return aligned(((rows + cols) * x.data.shape[3] + np.arange(self.group_words)[None, None, :]).reshape(-1))

    def _pixels(self, x: PackedTensor, out: np.ndarray | PackedTensor, pattern: np.ndarray, lanes: int) -> np.ndarray:
        """The pixel table (bitfx_bconv_pixel per output pixel): input word offset, packed output
        half-word offset, kc row offset."""
        out_h, out_w = self.out_size(x.height, x.width)
        (sh, sw), (top, left) = self.window.strides, self.window.pads[:2]
        oh, ow = np.divmod(np.arange(out_h * out_w), out_w)
        table = np.zeros((out_h * out_w, 3), np.int64)
        in_row, in_col = x.border[0] - top + oh * sh, x.border[1] - left + ow * sw
        table[:, 0] = (in_row * x.data.shape[2] + in_col) * x.data.shape[3]
        if isinstance(out, PackedTensor):
            out_row, out_col = out.border[0] + oh, out.border[1] + ow
            table[:, 1] = (out_row * out.data.shape[2] + out_col) * out.data.shape[3] * 2
        table[:, 2] = pattern.astype(np.int64) * lanes
        return aligned(table)

    def bind(
        self,
        x: PackedTensor,
        out: np.ndarray | PackedTensor,
        *,
        residual: np.ndarray | None = None,
        clamp: tuple[float, float] = NO_CLAMP,
    ) -> Callable[[], None]:
        """Check the buffers once; return the call that runs the convolution into `out`."""
        if x.channels != self.in_channels or x.groups != self.group:
            raise BitfxError(
                f"binary conv expects {self.in_channels} channels in {self.group} groups, "
                f"got {x.channels} in {x.groups}"
            )
        if x.pad != (-1 if self.pad_value == -1 else 1):
            raise BitfxError(f"binary conv with pad_value={self.pad_value} got an input whose border holds {x.pad}")
        out_h, out_w = self.out_size(x.height, x.width)
        top, left = self.window.pads[:2]
        if x.border[0] < top or x.border[1] < left:
            raise BitfxError(
                f"the packed input's border {x.border} is smaller than the convolution's pads {self.window.pads}"
            )
        for axis, size, span, start in (
            (0, out_h, x.data.shape[1], x.border[0] - top),
            (1, out_w, x.data.shape[2], x.border[1] - left),
        ):
            if start + self.window.rows_read(size, axis) > span:
                raise BitfxError(f"the packed input's border {x.border} is too small for pads {self.window.pads}")
        pattern, kc = self.tables(x.height, x.width)
        packed = isinstance(out, PackedTensor)
        if packed:
            if self.threshold is None:
                raise BitfxError("call set_packed_output(threshold, flip) before writing packed output")
            if (out.batch, out.channels, out.height, out.width, out.groups) != (
                x.batch,
                self.out_channels,
                out_h,
                out_w,
                1,
            ):
                raise BitfxError(f"packed output must be {x.batch}×{self.out_channels}×{out_h}×{out_w} in one group")
            out_geom = out.geom()
        else:
            channels_last = _float_layout(out, "the float output")
            if out.shape != (x.batch, self.out_channels, out_h, out_w):
                raise BitfxError(
                    f"float output must have shape {(x.batch, self.out_channels, out_h, out_w)}, got {out.shape}"
                )
            out_geom = PackedGeom()
        if residual is not None:
            if packed or _float_layout(residual, "the residual") != channels_last:
                raise BitfxError("the residual must be float, in the float output's layout (NCHW or channels-last)")
            if residual.shape != (x.batch, self.out_channels, out_h, out_w):
                raise BitfxError(
                    f"residual must have the output's shape {(x.batch, self.out_channels, out_h, out_w)}, "
                    f"got {residual.shape}"
                )
        desc = BinaryConvDesc(
            x.geom(),
            self.group,
            self.group_words,
            *self.window.c_fields(),
            top,
            left,
            out_h,
            out_w,
            self.out_channels,
            self.blocks,
            len(kc),
            OUT_PACKED if packed else OUT_FLOAT,
            residual is not None,
            clamp[0],
            clamp[1],
            out_geom,
            not packed and channels_last,
        )
        taps, pixels = self._taps(x), self._pixels(x, out, pattern, kc.shape[1])
        threshold = self.threshold if packed else np.zeros(1, np.int64)
        flip = self.flip if packed else np.zeros(1, np.uint32)
        target = out.data if packed else out
        args = (
            desc,
            _pointer(x.data),
            _pointer(self.weights),
            _pointer(taps),
            _pointer(pixels),
            _pointer(kc),
            _pointer(self.scale),
            _pointer(self.bias),
            _pointer(residual),
            _pointer(threshold),
            _pointer(flip),
            _pointer(target),
        )
        keep = (x, out, residual, taps, pixels, kc, threshold, flip, self.weights, self.scale, self.bias)
        call = KernelCall("bitfx_binary_conv", *args, keep=keep)
        return CallSequence([call, out.fill_border_call()]) if packed and any(out.border) else call

    def __call__(
        self,
        x: PackedTensor,
        *,
        residual: np.ndarray | None = None,
        clamp: tuple[float, float] = NO_CLAMP,
        packed_border: Pads | None = None,
        packed_pad: int = 1,
    ):
        """Run once into a new output: float NCHW (in `residual`'s layout), or a PackedTensor when
        `packed_border` is given."""
        out_h, out_w = self.out_size(x.height, x.width)
        if packed_border is not None:
            out = PackedTensor.empty(x.batch, self.out_channels, out_h, out_w, border=packed_border, pad=packed_pad)
        elif residual is not None and is_channels_last(residual):
            out = empty_channels_last((x.batch, self.out_channels, out_h, out_w))
        else:
            out = np.empty((x.batch, self.out_channels, out_h, out_w), np.float32)
        self.bind(x, out, residual=residual, clamp=clamp)()
        return out


class PreparedConv:
    """What a prepared float convolution and its int8 form (int8_conv.Int8Conv) share: the output size of
    their `window`, and a run once into a new output through their `bind`."""

    window: Window
    out_channels: int

    def out_size(self, height: int, width: int) -> tuple[int, int]:
        return self.window.out_size(height, width)

    def __call__(
        self,
        x: np.ndarray,
        *,
        residual: np.ndarray | None = None,
        clamp: tuple[float, float] = NO_CLAMP,
        pool: MaxPool | None = None,
        channels_last: bool = False,
    ) -> np.ndarray:
        """Run once into a new output (channels-last memory with `channels_last`, which needs `pool`)."""
        out_h, out_w = self.out_size(x.shape[2], x.shape[3])
        if pool is not None:
            out_h, out_w = pool.out_size(out_h, out_w)
        shape = (x.shape[0], self.out_channels, out_h, out_w)
        out = empty_channels_last(shape) if channels_last else np.empty(shape, np.float32)
        self.bind(np.ascontiguousarray(x, np.float32), out, residual=residual, clamp=clamp, pool=pool)()
        return out


class FloatConv(PreparedConv):
    """A prepared float convolution (NCHW) with the fused epilogue y = clamp(scale·conv + bias [+ residual])."""

    def __init__(
        self,
        weights: np.ndarray,
        bias: np.ndarray | None = None,
        scale: np.ndarray | None = None,
        *,
        window: Window,
        group: int = 1,
        pad_value: float = 0.0,
    ) -> None:
        weights = np.asarray(weights, np.float32)
        if weights.ndim != 4 or weights.shape[2:] != window.kernel:
            raise BitfxError(
                f"float conv weights must be C_out×C_in/group×{window.kernel[0]}×{window.kernel[1]}, "
                f"got {weights.shape}"
            )
        out_channels = weights.shape[0]
        if out_channels % group:
            raise BitfxError(f"group={group} must divide out_channels={out_channels}")
        self.window, self.group, self.out_channels, self.pad_value = window, group, out_channels, pad_value
        self.in_channels = weights.shape[1] * group
        per_group = out_channels // group
        self.tiles = -(-per_group // FLOAT_TILE)
        tiled = np.zeros((group, self.tiles * FLOAT_TILE, weights[0].size), np.float32)
        tiled[:, :per_group] = weights.reshape(group, per_group, -1)
        self.weights = aligned(tiled.reshape(group, self.tiles, FLOAT_TILE, -1).transpose(0, 1, 3, 2))
        # the direct kernel's layout (group 1 only): [block][k][FLOAT_BLOCK], zero-padded channels
        self.block_weights: np.ndarray | None = None
        if group == 1:
            blocks = -(-out_channels // FLOAT_BLOCK)
            blocked = np.zeros((blocks * FLOAT_BLOCK, weights[0].size), np.float32)
            blocked[:out_channels] = weights.reshape(out_channels, -1)
            self.block_weights = aligned(blocked.reshape(blocks, FLOAT_BLOCK, -1).transpose(0, 2, 1))
        self.scale = np.ones(out_channels, np.float32) if scale is None else np.ascontiguousarray(scale, np.float32)
        self.bias = np.zeros(out_channels, np.float32) if bias is None else np.ascontiguousarray(bias, np.float32)

    def bind(
        self,
        x: np.ndarray,
        out: np.ndarray,
        *,
        residual: np.ndarray | None = None,
        clamp: tuple[float, float] = NO_CLAMP,
        pool: MaxPool | None = None,
    ) -> Callable[[], None]:
        """A call that writes y = clamp(scale·conv(x) + bias [+ residual]) into `out`; with `pool`, `out`
        receives that max pool of y instead, computed in one pass (the fused stem; no residual), in NCHW
        or channels-last memory as `out` is."""
        desc = conv_desc(self, x, out, residual=residual, clamp=clamp, pool=pool)
        arrays = (_pointer(self.weights), _pointer(self.block_weights), _pointer(self.scale), _pointer(self.bias))
        keep = (x, out, residual, self.weights, self.block_weights, self.scale, self.bias)
        if pool is None:
            return KernelCall(
                "bitfx_float_conv", desc, _pointer(x), *arrays, _pointer(residual), _pointer(out), keep=keep
            )
        pool_desc = pool.desc(desc.batch * self.out_channels, desc.out_h, desc.out_w)
        return KernelCall("bitfx_float_conv_maxpool", desc, pool_desc, _pointer(x), *arrays, _pointer(out), keep=keep)


def conv_desc(
    conv: FloatConv | Int8Conv,
    x: np.ndarray,
    out: np.ndarray,
    *,
    residual: np.ndarray | None,
    clamp: tuple[float, float],
    pool: MaxPool | None,
) -> FloatConvDesc:
    """The C descriptor of a float (or int8) convolution call, after checking every array against it."""
    _check_float(x, "the float conv input")
    batch, channels, height, width = x.shape
    if channels != conv.in_channels:
        raise BitfxError(f"float conv expects {conv.in_channels} input channels, got {channels}")
    out_h, out_w = conv.out_size(height, width)
    channels_last = _float_layout(out, "the float conv output")
    if channels_last and pool is None:
        raise BitfxError("a float conv writes channels-last output only when fused with a max pool")
    expected = (batch, conv.out_channels, *(pool.out_size(out_h, out_w) if pool else (out_h, out_w)))
    if out.shape != expected:
        raise BitfxError(f"float conv output must have shape {expected}, got {out.shape}")
    if pool is not None and residual is not None:
        raise BitfxError("a float conv fused with a max pool takes no residual")
    if residual is not None:
        _check_float(residual, "the residual")
        if residual.shape != out.shape:
            raise BitfxError(f"residual must have the output's shape {out.shape}, got {residual.shape}")
    window = conv.window
    return FloatConvDesc(
        batch,
        channels,
        height,
        width,
        conv.group,
        conv.out_channels,
        conv.tiles,
        *window.c_fields(),
        window.pads[0],
        window.pads[1],
        out_h,
        out_w,
        residual is not None,
        conv.pad_value,
        clamp[0],
        clamp[1],
        channels_last,
    )


class FloatGemm:
    """A prepared float matrix product with constant weights: y = alpha·x·W + beta·bias (ONNX Gemm, transA=0)."""

    def __init__(
        self,
        weights: np.ndarray,
        bias: np.ndarray | None = None,
        *,
        alpha: float = 1.0,
        beta: float = 1.0,
        transposed: bool = False,
    ) -> None:
        weights = np.asarray(weights, np.float32)
        if weights.ndim != 2:
            raise BitfxError(f"gemm weights must be 2-D, got shape {weights.shape}")
        self.weights = aligned(weights.T if transposed else weights)  # K × C
        self.k, self.channels = self.weights.shape
        self.bias = (
            None
            if bias is None
            else np.ascontiguousarray(np.broadcast_to(np.asarray(bias, np.float32).reshape(-1), (self.channels,)))
        )
        self.alpha, self.beta = alpha, beta

    def bind(self, x: np.ndarray, out: np.ndarray) -> Callable[[], None]:
        _check_float(x, "the gemm input", ndim=2)
        if x.shape[1] != self.k or out.shape != (x.shape[0], self.channels):
            raise BitfxError(
                f"gemm of a {x.shape} input with {self.k}×{self.channels} weights cannot write a {out.shape} output"
            )
        desc = FloatGemmDesc(x.shape[0], self.k, self.channels, self.bias is not None, self.alpha, self.beta)
        pointers = (_pointer(x), _pointer(self.weights), _pointer(self.bias), _pointer(out))
        return KernelCall("bitfx_float_gemm", desc, *pointers, keep=(x, out, self.weights, self.bias))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        out = np.empty((x.shape[0], self.channels), np.float32)
        self.bind(np.ascontiguousarray(x, np.float32), out)()
        return out


def bind_binary_maxpool(
    x: PackedTensor, out: PackedTensor, window: Window, ceil_mode: bool = False
) -> Callable[[], None]:
    """Max pool of packed ±1 values (AND of bits); `x`'s border must hold −1 (ignored taps)."""
    out_h, out_w = window.out_size(x.height, x.width, ceil_mode)
    if x.pad != -1 and (any(window.pads) or ceil_mode):
        raise BitfxError("a padded binary max pool needs an input border of −1 (the identity of max)")
    if (out.batch, out.channels, out.groups, out.height, out.width) != (x.batch, x.channels, x.groups, out_h, out_w):
        raise BitfxError(f"binary max pool output must be {x.batch}×{x.channels}×{out_h}×{out_w} in {x.groups} groups")
    top, left = window.pads[:2]
    for axis, size, span, start in (
        (0, out_h, x.data.shape[1], x.border[0] - top),
        (1, out_w, x.data.shape[2], x.border[1] - left),
    ):
        if start < 0 or start + window.rows_read(size, axis) > span:
            raise BitfxError(f"the packed input's border {x.border} is too small for the pool's pads {window.pads}")
    desc = BinaryMaxPoolDesc(x.geom(), out.geom(), *window.c_fields(), top, left, out_h, out_w)
    call = KernelCall("bitfx_binary_maxpool", desc, _pointer(x.data), _pointer(out.data), keep=(x, out))
    return CallSequence([call, out.fill_border_call()]) if any(out.border) else call


@dataclass(frozen=True)
class MaxPool:
    """A float max pool's window and rounding (ONNX MaxPool: padded taps are ignored)."""

    window: Window
    ceil_mode: bool = False

    def out_size(self, height: int, width: int) -> tuple[int, int]:
        return self.window.out_size(height, width, self.ceil_mode)

    def desc(self, planes: int, height: int, width: int) -> FloatMaxPoolDesc:
        """The C descriptor for `planes` planes of height × width."""
        window = self.window
        return FloatMaxPoolDesc(
            planes, height, width, *window.c_fields(), *window.pads[:2], *self.out_size(height, width)
        )


def bind_float_maxpool(x: np.ndarray, out: np.ndarray, window: Window, ceil_mode: bool = False) -> Callable[[], None]:
    """Max pool of float NCHW data; padded taps are ignored (ONNX MaxPool)."""
    _check_float(x, "the max pool input")
    batch, channels, height, width = x.shape
    pool = MaxPool(window, ceil_mode)
    out_h, out_w = pool.out_size(height, width)
    if out.shape != (batch, channels, out_h, out_w):
        raise BitfxError(f"max pool output must have shape {(batch, channels, out_h, out_w)}, got {out.shape}")
    desc = pool.desc(batch * channels, height, width)
    return KernelCall("bitfx_float_maxpool", desc, _pointer(x), _pointer(out), keep=(x, out))


def bind_global_avgpool(x: np.ndarray, out: np.ndarray) -> KernelCall:
    """The mean of every (image, channel) plane of float32 `x` (N × C × spatial..., C-contiguous, or 4-D
    channels-last) into `out` (N·C floats, C-contiguous: N × C or N × C × 1 × 1), summed in double and
    rounded once (csrc/avgpool.c)."""
    channels_last = x.dtype == np.float32 and is_channels_last(x)
    if not channels_last:
        _check_float(x, "the average pool input", ndim=x.ndim)
    if x.ndim < 3 or math.prod(x.shape[2:]) < 1:
        raise BitfxError(f"a global average pool needs N × C × spatial input with pixels, got shape {x.shape}")
    _check_float(out, "the average pool output", ndim=out.ndim)
    if out.size != x.shape[0] * x.shape[1]:
        raise BitfxError(f"a global average pool of a {x.shape} input writes {x.shape[:2]} values, got {out.shape}")
    desc = AvgPoolDesc(x.shape[0], x.shape[1], math.prod(x.shape[2:]), channels_last)
    return KernelCall("bitfx_global_avgpool", desc, _pointer(x), _pointer(out), keep=(x, out))


def popcount_peak(seconds: float = 0.2, trials: int = 5, clock: Callable[[], float] = time.perf_counter) -> float:
    """This CPU's XOR+popcount+accumulate rate in bit-MACs per second with the current ISA and
    thread count (independent register operands only: the ceiling a convolution can approach).
    The best of `trials` runs of `seconds / trials` each, so a busy machine lowers it less.
    `clock=time.thread_time` times a 1-thread peak by the calling thread's CPU time."""
    rounds, best = 1 << 12, 0.0
    for _ in range(trials):
        while True:
            start = clock()
            work = lib.bitfx_popcount_peak(rounds)
            elapsed = clock() - start
            if elapsed >= seconds / trials:
                break
            rounds = max(rounds * 2, int(rounds * seconds / trials / max(elapsed, 1e-9)))
        best = max(best, work / elapsed)
    return best
