"""The `bitfx` ONNX domain: its name and version, its op names and their attribute names
(docs/binary-format.md). The `custom` lowering writes these; the packed runtime reads them."""

from __future__ import annotations

DOMAIN = "bitfx"
DOMAIN_VERSION = 1

BINARY_CONV2D = "BinaryConv2d"
BINARY_GEMM = "BinaryGemm"
BINARY_OPS = (BINARY_CONV2D, BINARY_GEMM)

# Attributes of each op, in the order the function bodies declare them.
CONV_ATTRIBUTES = (
    "kernel_shape", "strides", "pads", "dilations", "group", "in_channels", "pad_value", "binarize_input",
)  # fmt: skip
GEMM_ATTRIBUTES = ("in_features", "binarize_input")
ATTRIBUTES = {BINARY_CONV2D: CONV_ATTRIBUTES, BINARY_GEMM: GEMM_ATTRIBUTES}

# Model metadata (`metadata_props`) written by `export`: the lowering style that wrote the file.
LOWERING_METADATA_KEY = "bitfx.lowering"
# Model metadata written by `export(..., int8_float_convs=...)`: which float Convs may run in int8
# and the range of each one's input (bitfx.format.int8_marker).
INT8_CONVS_METADATA_KEY = "bitfx.int8_float_convs"


def qualified(op_type: str) -> str:
    """`bitfx.<op_type>`: how reports and the packed runtime name an op of the domain."""
    return f"{DOMAIN}.{op_type}"
