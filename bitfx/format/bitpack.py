"""The bit convention of bitfx, in one place (numpy only, so the packed runtime can use it too).

See docs/binary-format.md:

- sign(x) = +1 for x ≥ 0 (including −0.0), −1 for x < 0;
- a ±1 value is one bit: **bit 1 = −1, bit 0 = +1**;
- values are packed along the last axis into 64-bit words (`uint64`): element `c` is bit
  `c % 64` (bit 0 = least significant) of word `c // 64`; bits past the last element are 0.
"""

from __future__ import annotations

import numpy as np

WORD_BITS = 64


def packed_words(count: int) -> int:
    """How many 64-bit words hold `count` bits."""
    return -(-count // WORD_BITS)


def pack_signs(values: np.ndarray) -> np.ndarray:
    """Pack sign(values) along the last axis: shape (..., C) → uint64 (..., ⌈C/64⌉)."""
    values = np.asarray(values)
    count = values.shape[-1]
    words = packed_words(count)
    bits = np.zeros((*values.shape[:-1], words * WORD_BITS), dtype=np.uint8)
    bits[..., :count] = values < 0
    as_bytes = np.packbits(bits.reshape(*values.shape[:-1], words, WORD_BITS), axis=-1, bitorder="little")
    return np.ascontiguousarray(as_bytes).view("<u8").reshape(*values.shape[:-1], words).astype(np.uint64)


def real_bits_mask(count: int) -> np.ndarray:
    """The words of `count` packed values with every real bit set and the bits past them 0."""
    mask = np.full(packed_words(count), np.uint64(0xFFFFFFFFFFFFFFFF))
    if count % WORD_BITS:
        mask[-1] = np.uint64((1 << (count % WORD_BITS)) - 1)
    return mask


def unpack_signs(words: np.ndarray, count: int) -> np.ndarray:
    """The ±1 float32 values of `pack_signs`: uint64 (..., W) → (..., count), count ≤ 64·W."""
    words = np.asarray(words, dtype=np.uint64)
    if not 0 <= count <= words.shape[-1] * WORD_BITS:
        raise ValueError(f"cannot unpack {count} values from {words.shape[-1]} words of {WORD_BITS} bits")
    as_bytes = np.ascontiguousarray(words.astype("<u8")).view(np.uint8)
    bits = np.unpackbits(as_bytes.reshape(*words.shape[:-1], -1), axis=-1, bitorder="little")[..., :count]
    return (1.0 - 2.0 * bits).astype(np.float32)
