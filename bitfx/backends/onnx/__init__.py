"""ONNX back end: one module per lowering style (`float`, `custom`, `int8`, `integer`, `qdq`), export,
onnxruntime sessions, verification (`verify`) and reports on a file (`report`)."""

from bitfx.backends.onnx import (  # noqa: F401  (register styles and checks)
    custom,
    float,
    int8,
    integer,
    qdq,
    verify_binary,
    verify_integer,
)
from bitfx.backends.onnx.export import export, lowering_of
from bitfx.backends.onnx.lowerings import available_lowerings, register_lowering
from bitfx.backends.onnx.report import onnx_summary, op_counts, optimized_op_counts, quantized_layer_fusion
from bitfx.backends.onnx.session import load_model, run_session, session
from bitfx.backends.onnx.verify import DEFAULT_VERIFY_RTOL, VerifyReport, register_verifier, verifier_for, verify

__all__ = [
    "DEFAULT_VERIFY_RTOL",
    "VerifyReport",
    "available_lowerings",
    "export",
    "lowering_of",
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
