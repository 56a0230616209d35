"""Loading ONNX files and onnxruntime sessions with clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from bitfx.errors import LoweringError


def load_model(path: str | Path) -> onnx.ModelProto:
    """Read an ONNX file, or raise `LoweringError` saying why it cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise LoweringError(f"ONNX file {str(path)!r} does not exist")
    try:
        return onnx.load(str(path))
    except Exception as error:
        raise LoweringError(
            f"{str(path)!r} is not a readable ONNX model ({type(error).__name__}: {error}); re-export it"
        ) from error


def session(
    path: str | Path,
    *,
    threads: int | None = None,
    optimized_model_path: str | Path | None = None,
    optimization: ort.GraphOptimizationLevel = ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
) -> ort.InferenceSession:
    """A CPU onnxruntime session. `threads` sets intra-op threads (default: onnxruntime's);
    `optimized_model_path` writes the graph onnxruntime actually runs (to count fusions)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = optimization
    options.log_severity_level = 3  # errors only: the optimized-model warning is expected
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if optimized_model_path is not None:
        options.optimized_model_filepath = str(optimized_model_path)
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:
        raise LoweringError(f"onnxruntime cannot load {str(path)!r}: {error}") from error


def run_session(sess: ort.InferenceSession, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Run with positional numpy inputs; returns the outputs in graph order."""
    if len(inputs) != len(sess.get_inputs()):
        raise LoweringError(f"the ONNX model takes {len(sess.get_inputs())} inputs, got {len(inputs)}")
    return sess.run(None, {spec.name: value for spec, value in zip(sess.get_inputs(), inputs)})
