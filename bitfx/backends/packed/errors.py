"""Errors of the packed runtime (each says what, where, and how to fix it)."""

from bitfx.errors import LoweringError


class PackedModelError(LoweringError):
    """An ONNX file cannot be run by the packed runtime (unreadable, unsupported ops or attributes, bad shapes)."""
