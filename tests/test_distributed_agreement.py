"""Under torch.distributed, one rank's bad data or different model is the same clear error on
every rank (2 gloo processes, 20 s collective timeout: a hang would fail, not wait half an hour)."""

import re

import pytest
import torch
from distributed import error_of, run_on_two_ranks
from torch import nn

from bitfx.ir import capture
from bitfx.passes import PAMSQuantize, Pipeline, RankPrune
from bitfx.passes.prune.feature_rank import average_feature_ranks
from bitfx.train import on_epoch_start

pytestmark = pytest.mark.slow
TIMEOUT = 20


def _model(width: int = 6) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(width, 6, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(6 * 36, 2),
    )


def _batches(n: int = 2) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [torch.randn(3, 3, 6, 6, generator=generator) for _ in range(n)]


def _nan_batches() -> list[torch.Tensor]:
    batches = _batches()
    batches[1][0, 0, 0, 0] = float("nan")
    return batches


def _hrank_with_empty_shard(rank: int):
    data = _batches() if rank == 0 else []
    gm = capture(_model(), _batches()[0])
    return error_of(lambda: RankPrune(rate=0.5).plan(gm, data))


def _hrank_with_nan_shard(rank: int):
    data = _nan_batches() if rank == 0 else _batches()
    gm = capture(_model(), _batches()[0])
    return error_of(lambda: average_feature_ranks(gm, ["_1", "_3"], data, max_batches=5))


def _hrank_with_different_models(rank: int):
    gm = capture(_model(width=6 if rank == 0 else 8), _batches()[0])
    return error_of(lambda: RankPrune(rate=0.5).plan(gm, _batches()))


def _hrank_with_nothing_to_prune_on_one_rank(rank: int):
    gm = capture(_model(), _batches()[0])
    return error_of(lambda: RankPrune(rate=0.5 if rank == 0 else 0.0).plan(gm, _batches()))


def _pams_with_empty_shard(rank: int):
    gm = capture(_model(), _batches()[0])
    return error_of(lambda: Pipeline([PAMSQuantize(float_ends=False)]).run(gm, data=_batches() if rank else []))


def _pams_with_nan_shard(rank: int):
    gm = capture(_model(), _batches()[0])
    return error_of(
        lambda: Pipeline([PAMSQuantize(float_ends=False)]).run(gm, data=_nan_batches() if rank else _batches())
    )


def _rotation_with_nan_weights(rank: int):
    block = nn.Sequential(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.Flatten()).eval()
    torch.manual_seed(0)
    student = Pipeline.from_spec("binarize(keep_first=false),rotate").run(capture(block, torch.zeros(2, 1, 8, 8)))
    gm = student.graph_module
    if rank == 1:
        with torch.no_grad():
            gm.get_submodule("0").weight[0, 0, 0, 0] = float("nan")
    return error_of(lambda: on_epoch_start(gm, 0, 2))


def _rotation_with_different_models(rank: int):
    width = 8 if rank == 0 else 12
    block = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Conv2d(8, width, 3), nn.Flatten()).eval()
    gm = Pipeline.from_spec("binarize(keep_first=false),rotate").run(capture(block, torch.zeros(2, 1, 8, 8)))
    return error_of(lambda: on_epoch_start(gm.graph_module, 0, 2))


@pytest.mark.parametrize(
    ("on_rank", "message"),
    [
        (_hrank_with_empty_shard, r"HRank calibration failed on 1 of 2 ranks.*rank 1: the calibration data is empty"),
        (_hrank_with_nan_shard, r"HRank calibration failed on 1 of 2 ranks.*rank 0: node '_1' holds NaN or Inf"),
        (_hrank_with_different_models, r"the ranks hold different models: '0.bias' is torch.float32 \(6,\) on rank 0"),
        (_hrank_with_nothing_to_prune_on_one_rank, r"not every rank can take part \(rank 1: nothing to prune\)"),
        (_pams_with_empty_shard, r"pams calibration failed on 1 of 2 ranks.*rank 0: calibration saw no samples"),
        (_pams_with_nan_shard, r"pams calibration failed on 1 of 2 ranks.*rank 1: the calibration data gives NaN"),
        (
            _rotation_with_nan_weights,
            r"rotation update failed on 1 of 2 ranks.*rank 1: the binary conv weights hold NaN",
        ),
        (_rotation_with_different_models, r"on_epoch_start: the ranks hold different models"),
    ],
)
def test_a_problem_on_one_rank_is_the_same_error_on_every_rank(tmp_path, on_rank, message):
    first, second = run_on_two_ranks(on_rank, tmp_path, timeout_seconds=TIMEOUT)
    assert first is not None and first == second
    assert first[0] in ("PassError", "BitfxError")
    assert re.search(message, first[1]), first[1]
