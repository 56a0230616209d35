"""The demo: its table from measured rows (quick), and a short run end to end (slow)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from examples.demo import fold_note, results_table

ROOT = Path(__file__).resolve().parent.parent


def _row(variant: str, runtime: str, accuracy: float, latency_ms: float) -> dict:
    return {
        "variant": variant,
        "runtime": runtime,
        "accuracy": accuracy,
        "latency_ms": latency_ms,
        "threads": 1,
        "file_bytes": 200 * 1024,
        "peak_rss_mb": 64.4,
        "model_rss_mb": 3.25,
    }


def test_results_table_has_one_row_per_variant_with_units_in_the_headers() -> None:
    rows = [_row("float", "onnxruntime", 0.975, 0.41), _row("1-bit xnor", "bitfx packed", 0.9611, 0.123)]
    header, rule, *body = results_table(rows).splitlines()
    assert "latency ms (1 thread)" in header and "file KB" in header and "peak RSS MB" in header
    assert set(rule) <= {"-", " "} and len(body) == 2
    assert body[1].split()[:4] == ["1-bit", "xnor", "bitfx", "packed"]
    assert "96.1%" in body[1] and "0.123" in body[1] and "200" in body[1] and "64 (+3.2)" in body[1]


def test_fold_note_names_what_fuse_bn_left_and_why() -> None:
    note = fold_note({"fused": 1, "skipped": {"bn1": "input is a BinaryConv2d, which cannot absorb a BatchNorm2d"}})
    assert note.startswith("fuse_bn folded 1 BatchNorms and left 1: 1× input is a BinaryConv2d")
    assert fold_note({"fused": 3, "skipped": {}}) == "fuse_bn folded 3 BatchNorms and left none"


@pytest.mark.slow
def test_demo_prints_its_table_and_writes_its_pictures(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    run = subprocess.run(
        [sys.executable, "-m", "examples.demo", "--epochs", "1", "--binary-epochs", "1", "--repeats", "5"]
        + ["--out", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr
    for variant in ("float (fuse_bn)", "int8 U8S8 quantize_static", "1-bit xnor, fine-tuned", "1-bit xnor + int8 stem"):
        assert variant in run.stdout
    assert "Where to go next" in run.stdout
    svg = (tmp_path / "binary_graph.svg").read_text()
    assert svg.startswith("<svg") and svg.count("— 1-bit") >= 18  # ResNet-20's binarized convs
    assert (tmp_path / "accuracy_latency.png").read_bytes()[:4] == b"\x89PNG"
