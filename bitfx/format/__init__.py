"""The binary ONNX contract of bitfx (torch-free, numpy only): the `bitfx` domain, its op and
attribute names (`domain`), and the bit-packing convention (`bitpack`). The lowering, both back
ends and the IR import these; nothing else spells them out. See docs/binary-format.md."""

from bitfx.format.bitpack import WORD_BITS, pack_signs, packed_words, real_bits_mask, unpack_signs
from bitfx.format.domain import (
    ATTRIBUTES,
    BINARY_CONV2D,
    BINARY_GEMM,
    BINARY_OPS,
    CONV_ATTRIBUTES,
    DOMAIN,
    DOMAIN_VERSION,
    GEMM_ATTRIBUTES,
    qualified,
)

__all__ = [
    "ATTRIBUTES",
    "BINARY_CONV2D",
    "BINARY_GEMM",
    "BINARY_OPS",
    "CONV_ATTRIBUTES",
    "DOMAIN",
    "DOMAIN_VERSION",
    "GEMM_ATTRIBUTES",
    "WORD_BITS",
    "pack_signs",
    "packed_words",
    "qualified",
    "real_bits_mask",
    "unpack_signs",
]
