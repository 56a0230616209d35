"""ONNX back end: lowering styles, export, onnxruntime sessions, verification, inspection."""

from bitfx.backends.onnx.export import export
from bitfx.backends.onnx.inspect import onnx_summary, op_counts
from bitfx.backends.onnx.lowering import available_lowerings, register_lowering
from bitfx.backends.onnx.optimized import optimized_op_counts
from bitfx.backends.onnx.session import load_model, run_session, session
from bitfx.backends.onnx.verify import DEFAULT_VERIFY_RTOL, VerifyReport, verify

__all__ = [
    "DEFAULT_VERIFY_RTOL",
    "VerifyReport",
    "available_lowerings",
    "export",
    "load_model",
    "onnx_summary",
    "op_counts",
    "optimized_op_counts",
    "register_lowering",
    "run_session",
    "session",
    "verify",
]
