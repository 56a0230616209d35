"""HRank statistics under torch.distributed: ranks all-reduce sums and image counts, so each
process gets the statistics of the union of all shards."""

import torch
import torch.distributed as dist
from distributed import free_port, run_on_two_ranks
from torch import nn

from bitfx.ir import capture
from bitfx.passes import RankPrune
from bitfx.passes.prune.feature_rank import average_feature_ranks


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(6, 6, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(6 * 36, 2),
    )


def _shards() -> list[list[torch.Tensor]]:
    """Two shards of different sizes, with a channel pattern that differs between them."""
    generator = torch.Generator().manual_seed(1)
    first = [torch.randn(3, 3, 6, 6, generator=generator) for _ in range(2)]
    second = [torch.randn(5, 3, 6, 6, generator=generator).clamp(min=0) for _ in range(1)]
    return [first, second]


def _on_rank(rank: int) -> dict:
    data = _shards()[rank]
    gm = capture(_model(), data[0])
    stats = average_feature_ranks(gm, ["_1", "_3"], data, max_batches=5)
    plan = RankPrune(rate=0.5, prune_classifier=True).plan(gm, data)
    return {
        "ranks": stats.ranks,
        "images": stats.images,
        "batches": stats.batches,
        "removed": [g.removed for g in plan.groups],
    }


def test_two_processes_agree_with_one_process_over_all_the_data(tmp_path):
    results = run_on_two_ranks(_on_rank, tmp_path)
    everything = [b for shard in _shards() for b in shard]
    gm = capture(_model(), everything[0])
    single = average_feature_ranks(gm, ["_1", "_3"], everything, max_batches=5)
    single_plan = RankPrune(rate=0.5, prune_classifier=True).plan(gm, everything)
    for result in results:
        assert result["images"] == 11 and result["batches"] == 3
        for tap in ("_1", "_3"):
            torch.testing.assert_close(result["ranks"][tap], single.ranks[tap])
        assert result["removed"] == [g.removed for g in single_plan.groups]
    local = average_feature_ranks(gm, ["_1"], _shards()[0], max_batches=5)
    assert not torch.equal(local.ranks["_1"], single.ranks["_1"])  # the shards really differ


def test_world_of_one_process_gives_the_undistributed_statistics():
    data = _shards()[0]
    gm = capture(_model(), data[0])
    alone = average_feature_ranks(gm, ["_1"], data, max_batches=5)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        reduced = average_feature_ranks(gm, ["_1"], data, max_batches=5)
    finally:
        dist.destroy_process_group()
    torch.testing.assert_close(reduced.ranks["_1"], alone.ranks["_1"])
    assert reduced.images == alone.images == 6
