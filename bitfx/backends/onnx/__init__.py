"""ONNX back end: lowering styles, export, onnxruntime sessions, verification, inspection."""

import bitfx.backends.onnx.binary_custom  # noqa: F401  (registers the custom lowering of the binary ops)
import bitfx.backends.onnx.binary_float  # noqa: F401  (the float translation of the binary ops)
import bitfx.backends.onnx.binary_int8  # noqa: F401  (registers the int8 lowering of the binary ops)
from bitfx.backends.onnx import integer, verify_integer  # noqa: F401  (register the integer lowering and its check)
from bitfx.backends.onnx import lower_qdq, verify_qdq  # noqa: F401  (register the qdq lowering and its check)
from bitfx.backends.onnx.export import export
from bitfx.backends.onnx.fusion import quantized_layer_fusion
from bitfx.backends.onnx.inspect import onnx_summary, op_counts
from bitfx.backends.onnx.lowering import available_lowerings, register_lowering
from bitfx.backends.onnx.optimized import optimized_op_counts
from bitfx.backends.onnx.session import load_model, run_session, session
from bitfx.backends.onnx.verify import DEFAULT_VERIFY_RTOL, VerifyReport, register_verifier, verifier_for, verify

__all__ = [
    "DEFAULT_VERIFY_RTOL",
    "VerifyReport",
    "available_lowerings",
    "export",
    "load_model",
    "onnx_summary",
    "op_counts",
    "optimized_op_counts",
    "quantized_layer_fusion",
    "register_lowering",
    "register_verifier",
    "run_session",
    "session",
    "verifier_for",
    "verify",
]
