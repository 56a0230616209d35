"""examples/tiny_detection end to end on a tiny budget: every variant trained, lowered, evaluated and timed."""

import math

import pytest

from examples.tiny_detection import VARIANTS, Budget, run, summarize


@pytest.mark.slow
def test_every_variant_runs_end_to_end_and_the_runtimes_agree():
    rows = run(Budget(train_images=32, test_images=16, float_epochs=2, finetune_epochs=1, repeats=3), seeds=1)
    assert [row["variant"] for row in rows] == list(VARIANTS)
    assert [row["lowering"] for row in rows] == ["float", "float", "custom", "custom", "float"]
    for row in rows:
        assert 0 <= row["AP50_tiny"] <= row["AP25_tiny"] <= 1 and 0 <= row["MR50_tiny"] <= 1
        assert row["packed_vs_ort"] < 1e-3 and row["onnxruntime_ms"] > 0 and row["packed_ms"] > 0
        assert not math.isnan(row["AP50_tiny"])
    table = summarize(rows)
    assert all(name in table for name in VARIANTS) and "tiny AP@0.5 %" in table
