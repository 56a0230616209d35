"""The int8 marker of a lowered file: which float Convs may run on an int8 kernel, and the range
their input is quantized from. It is model metadata (`metadata_props`, key
`INT8_CONVS_METADATA_KEY`), so the standard ops carry no extra attribute and stock onnxruntime
loads the file unchanged. The value is JSON:

    {"version": 1, "convs": {"<Conv node name>": [low, high], ...}}

with finite low < high. A reader treats it as untrusted: `decode_int8_marker` refuses anything
else with a message that says what is wrong. The same module turns what a user passes (a range or
a calibration batch) into a range, for the writer and for the packed runtime's override."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence

import numpy as np

from bitfx.errors import BitfxError

MARKER_VERSION = 1
MAX_MARKER_CHARS = 1 << 20  # a marker longer than this is refused before it is parsed
MAX_NAME_CHARS = 4096  # longest node name a marker may hold


class Int8MarkerError(BitfxError):
    """A file's int8 marker is not the JSON this module writes."""


def input_range(value: object) -> tuple[float, float]:
    """The quantization range of a convolution's input from what the user passed: a (low, high) pair
    of finite numbers with low < high, or a calibration batch (a non-empty numeric array whose
    minimum and maximum are used). Raises `BitfxError` for anything else."""
    if isinstance(value, np.ndarray):
        if value.size == 0 or not np.issubdtype(value.dtype, np.number) or not np.all(np.isfinite(value)):
            raise BitfxError("an int8 calibration batch must be a non-empty array of finite numbers")
        low, high = float(value.min()), float(value.max())
    elif (
        isinstance(value, Sequence)
        and len(value) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    ):
        low, high = float(value[0]), float(value[1])
    else:
        raise BitfxError(
            "int8_float_convs must be the model input's range (low, high) or a calibration batch (an array), "
            f"got {value!r}"
        )
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise BitfxError(f"the int8 input range must be finite with low < high, got ({low}, {high})")
    return low, high


def encode_int8_marker(ranges: Mapping[str, tuple[float, float]]) -> str:
    """The marker's JSON for {Conv node name: its input's (low, high)}."""
    convs = {}
    for name, (low, high) in ranges.items():
        convs[name] = list(_checked_range(name, [low, high]))
    return json.dumps({"version": MARKER_VERSION, "convs": convs}, allow_nan=False, sort_keys=True)


def decode_int8_marker(text: object) -> dict[str, tuple[float, float]]:
    """{Conv node name: (low, high)} from a marker's text; `Int8MarkerError` says what is wrong."""
    if not isinstance(text, str):
        raise Int8MarkerError(f"the marker must be text, got {type(text).__name__}")
    if len(text) > MAX_MARKER_CHARS:
        raise Int8MarkerError(f"the marker has {len(text)} characters, at most {MAX_MARKER_CHARS} are read")
    try:
        data = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as error:
        raise Int8MarkerError(f"the marker is not valid JSON ({type(error).__name__}: {error})") from None
    if not isinstance(data, dict) or set(data) != {"version", "convs"}:
        raise Int8MarkerError('the marker must be a JSON object with exactly the keys "version" and "convs"')
    if data["version"] != MARKER_VERSION or isinstance(data["version"], bool):
        version = f"{data['version']!r:.80}"
        raise Int8MarkerError(f"marker version {version} is not supported (this reader knows {MARKER_VERSION})")
    convs = data["convs"]
    if not isinstance(convs, dict):
        raise Int8MarkerError('"convs" must map Conv node names to [low, high]')
    return {name: _checked_range(name, value) for name, value in convs.items()}


def _checked_range(name: str, value: object) -> tuple[float, float]:
    if not isinstance(name, str) or not name or len(name) > MAX_NAME_CHARS:
        shown = name[:60] + "…" if isinstance(name, str) and len(name) > 60 else name
        raise Int8MarkerError(f"node name {shown!r} must be non-empty text of at most {MAX_NAME_CHARS} characters")
    numbers = isinstance(value, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    if not numbers or len(value) != 2:
        raise Int8MarkerError(f"the range of {name!r} must be [low, high] (two numbers), got {value!r:.80}")
    try:
        low, high = float(value[0]), float(value[1])
    except OverflowError:
        low, high = math.inf, math.inf
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise Int8MarkerError(f"the range of {name!r} must be finite with low < high, got {value!r:.80}")
    return low, high


def _refuse_constant(token: str) -> float:
    raise ValueError(f"{token} is not a finite number")
