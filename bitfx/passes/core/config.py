"""Pipeline config files in TOML: read with tomllib, written back by `dump_toml`.

    [check]
    rtol = 1e-05            # tolerance of the numerical check after output-preserving passes

    [[passes]]
    name = "fuse_bn"

    [[passes]]
    name = "binarize"
    scheme = "xnor"         # every other key is a parameter of the pass

A saved file loads back to the same pipeline, so a run can be replayed.
"""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path
from typing import Any

from bitfx.errors import PassConfigError
from bitfx.passes.core.selection import LayerSelection

_TOP_KEYS = {"check", "passes"}
_CHECK_KEYS = {"rtol"}


def read_config(path: str | Path) -> dict[str, Any]:
    """Parse and validate the structure of a pipeline file (pass names are checked later)."""
    path = Path(path)
    try:
        config = tomllib.loads(path.read_text())
    except FileNotFoundError as error:
        raise PassConfigError(f"pipeline file {str(path)!r} does not exist") from error
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise PassConfigError(f"pipeline file {str(path)!r} is not valid TOML: {error}") from error
    unknown = set(config) - _TOP_KEYS
    if unknown:
        raise PassConfigError(f"{path}: unknown top-level keys {sorted(unknown)}; valid: [check], [[passes]]")
    check = config.get("check", {})
    if not isinstance(check, dict):
        raise PassConfigError(f"{path}: check must be a [check] table, got {check!r}")
    unknown = set(check) - _CHECK_KEYS
    if unknown:
        raise PassConfigError(f"{path}: unknown keys in [check] {sorted(unknown)}; valid: {sorted(_CHECK_KEYS)}")
    if "rtol" in check:
        check_rtol(check["rtol"], f"{path}: [check]")
    passes = config.get("passes", [])
    if not isinstance(passes, list) or not all(isinstance(entry, dict) for entry in passes):
        raise PassConfigError(f"{path}: passes must be written as [[passes]] tables, got {passes!r}")
    for index, entry in enumerate(passes):
        if not isinstance(entry.get("name"), str):
            raise PassConfigError(f'{path}: [[passes]] entry {index + 1} has no name = "..." (a string)')
    return config


def check_rtol(value: object, where: str) -> float:
    """`value` as a float when it is a finite number ≥ 0 (not a bool); else `PassConfigError`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise PassConfigError(
            f"{where}: rtol = {value!r} must be a finite number ≥ 0 (the largest relative error allowed, e.g. 1e-5)"
        )
    return float(value)


def dump_toml(config: dict[str, Any]) -> str:
    """TOML text for a `{check: {...}, passes: [{name, **params}, ...]}` dict."""
    lines = ["# bitfx pipeline; replay with: bitfx compile MODEL --pipeline THIS_FILE -o OUT.onnx", ""]
    if config.get("check"):
        lines.append("[check]")
        lines += [f"{_key(k)} = {_value(v)}" for k, v in config["check"].items()]
        lines.append("")
    for entry in config.get("passes", []):
        lines.append("[[passes]]")
        lines += [f"{_key(k)} = {_value(v)}" for k, v in entry.items() if v is not None]
        lines.append("")
    return "\n".join(lines)


def _key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)


def _value(value: Any) -> str:
    if isinstance(value, LayerSelection):
        value = value.to_config()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return ("inf" if value > 0 else "-inf") if math.isinf(value) else "nan" if math.isnan(value) else repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(str(k))} = {_value(v)}" for k, v in value.items() if v is not None) + " }"
    raise PassConfigError(f"cannot write {value!r} ({type(value).__name__}) to a TOML pipeline file")
