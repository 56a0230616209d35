"""What the benchmark scripts share: the timing helpers of `examples.timing`, and onnxruntime's own
int8 quantization of a float ONNX file, the baseline several benchmarks compare bitfx against.

Benchmarks run as `python benchmarks/NAME.py`, which puts `benchmarks/` on the module path
but not the repository root, and `examples/` is not installed: importing this module adds
the root so that the scripts can use `examples.*`. Import it before any `examples` module.
"""

import sys
from pathlib import Path

import numpy as np
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

ROOT = str(Path(__file__).resolve().parent.parent)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from examples.timing import (  # after ROOT is on the path
    TURN_BLOCK,
    TURN_SETTLE,
    clock_for,
    interleaved_at_threads,
    interleaved_median_ms,
    median_ms,
    timed,
)


class _Inputs(CalibrationDataReader):
    """Feeds onnxruntime's calibrator the given inputs, one per call."""

    def __init__(self, name: str, inputs: list[np.ndarray]) -> None:
        self.items = iter([{name: x} for x in inputs])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.items, None)


def ort_quantize_static(
    prepared: Path,
    out: Path,
    input_name: str,
    calibration: list[np.ndarray],
    activation_type: QuantType = QuantType.QUInt8,
) -> Path:
    """onnxruntime's int8 model of a float file already run through its `quant_pre_process`:
    `quantize_static` to QDQ with int8 per-channel weights, MinMax calibration on `calibration`
    (fed as `input_name`) and `activation_type` activations (uint8 by default: U8S8). Returns `out`."""
    quantize_static(
        prepared,
        out,
        _Inputs(input_name, calibration),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        calibrate_method=CalibrationMethod.MinMax,
        activation_type=activation_type,
        weight_type=QuantType.QInt8,
    )
    return out


__all__ = [
    "TURN_BLOCK",
    "TURN_SETTLE",
    "clock_for",
    "interleaved_at_threads",
    "interleaved_median_ms",
    "median_ms",
    "ort_quantize_static",
    "timed",
]
