"""A tiny run of the RBNN experiment script (examples/rbnn_digits.py) end to end."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from examples import rbnn_digits


def test_the_experiment_runs_and_measures_flips(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r.json"
    argv = [
        "rbnn_digits",
        "--seeds",
        "1",
        "--epochs",
        "1",
        "--starts",
        "float",
        "--variants",
        "xnor,rbnn",
        "--json",
        str(out),
    ]
    monkeypatch.setattr(sys, "argv", argv)
    rbnn_digits.main()
    assert "float  rbnn" in capsys.readouterr().out
    results = json.loads(out.read_text())["results"]
    assert set(results) == {"float/xnor", "float/rbnn"}
    xnor, rbnn = results["float/xnor"][0], results["float/rbnn"][0]
    assert (
        0 <= xnor["accuracy"] <= 1 and xnor["flips_from_start"] < 0.2
    )  # one epoch moves few signs of the float weights
    assert rbnn["flips_from_start"] == pytest.approx(0.5, abs=0.05)  # a random rotation alone flips about half of them
    assert 0.9 < rbnn["mean_abs_sin_theta"] <= 1


def test_unknown_variants_are_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["rbnn_digits", "--variants", "xnor,nope"])
    with pytest.raises(SystemExit):
        rbnn_digits.main()
