"""A tiny run of the search experiment script (examples/search_digits.py) end to end."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from bitfx.ir.cells import build
from bitfx.search.space import Genotype
from examples import search_digits


@pytest.mark.slow
def test_a_cp_search_writes_a_genotype_that_runs_in_the_packed_runtime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r.json"
    argv = ["search_digits", "--policy", "cp", "--quick", "--nodes", "1", "--steps", "1", "--warmup", "4"]
    argv += ["--random", "1", "--epochs", "1", "--final-channels", "4", "--out", str(tmp_path), "--json", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    search_digits.main()
    assert "rank" in capsys.readouterr().out
    row = json.loads(out.read_text())["results"][0]
    assert row["cost"]["samples"] == 6 + 5 + 4 + 3 + 2  # K·T per round while K goes from 6 to 2
    assert row["packed_max_rel_error"] <= search_digits.PACKED_RTOL
    assert 1 <= row["rank"] <= 2 and len(row["random_accuracies"]) == 1
    genotype = Genotype.load(tmp_path / "cp_seed0.toml")
    assert genotype.to_data() == row["genotype"]
    assert build(genotype, 4, 3, in_channels=1) is not None
