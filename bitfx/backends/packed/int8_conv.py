"""The int8 path for a float convolution (opt-in: `load(path, int8_float_convs=...)`): the input is
quantized per tensor to u8 from a range the user gives (or a calibration batch's), the weights per
output channel to s8 (symmetric, ±127), products are summed in int32 (AVX-512 VNNI `vpdpbusd`
when the CPU has it, else AVX2 `vpmaddwd` on operands widened to 16 bits, else a portable loop;
all three give the same sums) and dequantized in the float
convolution's epilogue: y = clamp(s_x·s_c·scale_c·(Σ q·w − z·Σ w) + bias_c). Inputs outside the
range saturate at its ends."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from bitfx.backends.packed._native import FLOAT_BLOCK, Int8Desc
from bitfx.backends.packed.call_table import KernelCall
from bitfx.backends.packed.kernels import NO_CLAMP, MaxPool, PreparedConv, Window, _pointer, aligned, conv_desc
from bitfx.errors import BitfxError

MAX_K = 65536  # reduction length (with kernel columns in quads of 4) whose int32 sums cannot overflow


def int8_refusal(weights: np.ndarray | None, group: int, dilations: Sequence[int], residual: bool) -> str | None:
    """Why a float convolution cannot run on the int8 kernel, or None when it can."""
    if weights is None or weights.dtype != np.float32 or weights.ndim != 4:
        return "its weights are not a constant 4-D float32 tensor"
    if group != 1:
        return f"group={group} (the int8 kernel runs group 1 only)"
    if dilations[1] != 1:
        return "its kernel columns are dilated"
    if residual:
        return "it absorbs a residual Add"
    if weights.shape[1] * weights.shape[2] * -(-weights.shape[3] // 4) * 4 >= MAX_K:
        return "its reduction is too long for int32 sums"
    return None


class Int8Conv(PreparedConv):
    """A float convolution (group 1) prepared for the int8 kernel: the quantized weights laid out
    [block][c][kh][quad][64][4], the zero-point correction and the dequantizing multipliers."""

    group, tiles, pad_value = 1, 0, 0.0

    def __init__(
        self,
        weights: np.ndarray,
        bias: np.ndarray | None = None,
        scale: np.ndarray | None = None,
        *,
        window: Window,
        input_range: tuple[float, float],
    ) -> None:
        weights = np.asarray(weights, np.float32)
        refusal = int8_refusal(weights, 1, window.dilations, False)
        if refusal is not None:
            raise BitfxError(f"this convolution cannot run in int8: {refusal}")
        if weights.shape[2:] != window.kernel:
            raise BitfxError(f"int8 conv weights must be C_out×C_in×{window.kernel[0]}×{window.kernel[1]}")
        self.window, self.out_channels, self.in_channels = window, weights.shape[0], weights.shape[1]
        low, high = min(input_range[0], 0.0), max(input_range[1], 0.0)  # 0.0 (the padding) is exact
        input_scale = (high - low) / 255
        self.zero_point = int(np.clip(round(-low / input_scale), 0, 255))
        self.inv_scale = 1 / input_scale
        peak = np.abs(weights).reshape(self.out_channels, -1).max(axis=1)
        weight_scale = np.where(peak > 0, peak.astype(np.float64) / 127, 1.0)  # float64 step and quotient
        codes = np.clip(np.rint(weights / weight_scale[:, None, None, None]), -127, 127).astype(np.int8)
        quads = -(-weights.shape[3] // 4)
        blocks = -(-self.out_channels // FLOAT_BLOCK)
        padded = np.zeros((blocks * FLOAT_BLOCK, *weights.shape[1:3], quads * 4), np.int8)
        padded[: self.out_channels, :, :, : weights.shape[3]] = codes
        # [block][64 channels][c][kh][quad][4] → [block][c][kh][quad][64][4]
        blocked = padded.reshape(blocks, FLOAT_BLOCK, *weights.shape[1:3], quads, 4).transpose(0, 2, 3, 4, 1, 5)
        self.weights = aligned(blocked)
        self.quads = quads
        self.correction = (
            self.zero_point * padded.reshape(blocks * FLOAT_BLOCK, -1).astype(np.int32).sum(axis=1)
        ).astype(np.int32)
        channel_scale = np.ones(self.out_channels) if scale is None else np.asarray(scale, np.float64)
        self.scale = np.ascontiguousarray(input_scale * weight_scale * channel_scale, np.float32)
        self.bias = np.zeros(self.out_channels, np.float32) if bias is None else np.ascontiguousarray(bias, np.float32)

    def bind(
        self,
        x: np.ndarray,
        out: np.ndarray,
        *,
        residual: np.ndarray | None = None,
        clamp: tuple[float, float] = NO_CLAMP,
        pool: MaxPool | None = None,
    ) -> Callable[[], None]:
        """A call writing y = clamp(conv(x)·scale + bias) into `out` (its max pool with `pool`)."""
        if residual is not None:
            raise BitfxError("the int8 convolution takes no residual")
        desc = conv_desc(self, x, out, residual=None, clamp=clamp, pool=pool)
        int8 = Int8Desc(self.inv_scale, self.zero_point, self.quads)
        pool_desc = pool.desc(desc.batch * self.out_channels, desc.out_h, desc.out_w) if pool else None
        arrays = (self.weights, self.correction, self.scale, self.bias)
        return KernelCall(
            "bitfx_int8_conv",
            desc,
            int8,
            pool_desc,
            _pointer(x),
            *map(_pointer, arrays),
            _pointer(out),
            keep=(x, out, *arrays),
        )
