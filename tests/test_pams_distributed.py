"""PAMS calibration under torch.distributed: every rank ends with the α of all ranks' samples."""

import pytest
import torch
from distributed import run_on_two_ranks
from torch import nn

from bitfx.ir import capture
from bitfx.passes import PAMSQuantize, Pipeline


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 2, 3, padding=1),
    )


def _shards() -> list[list[torch.Tensor]]:
    """Two shards of different sizes and ranges, so that a missing reduction shows."""
    generator = torch.Generator().manual_seed(1)
    return [
        [torch.randn(2, 3, 6, 6, generator=generator) for _ in range(2)],
        [5 * torch.randn(3, 3, 6, 6, generator=generator)],
    ]


def _alphas(data: list[torch.Tensor]) -> tuple[dict[str, float], dict]:
    gm = capture(_model(), data[0])
    result = Pipeline([PAMSQuantize(float_ends=False)]).run(gm, data=data)
    return {
        name: float(p.detach()) for name, p in result.graph_module.named_parameters() if name.endswith("alpha")
    }, result.records[0].stats


def _on_rank(rank: int) -> tuple[dict[str, float], dict]:
    return _alphas(_shards()[rank])


def test_two_ranks_calibrate_like_one_process_over_all_the_data(tmp_path):
    results = run_on_two_ranks(_on_rank, tmp_path)
    single, _ = _alphas([b for shard in _shards() for b in shard])
    local, _ = _alphas(_shards()[0])
    for alphas, stats in results:
        assert stats["calibration"] == "7 samples across 2 ranks from the calibration data"
        assert alphas.keys() == single.keys()
        for name, value in single.items():
            assert alphas[name] == pytest.approx(value, rel=1e-6)
    assert any(abs(local[n] - single[n]) > 0.1 * single[n] for n in single)  # the shards do differ
