"""Errors of the packed runtime (each says what, where, and how to fix it)."""

from bitfx.errors import BitfxError, LoweringError


class PackedModelError(LoweringError):
    """An ONNX file cannot be run by the packed runtime (unreadable, unsupported ops or attributes, bad shapes)."""


class PackedKernelError(BitfxError):
    """A compiled kernel call failed (out of memory, or an invalid argument); its output was not written."""
