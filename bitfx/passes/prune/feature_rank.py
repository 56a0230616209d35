"""HRank statistics: the average matrix rank of every channel's feature map at chosen nodes.

For each calibration image and channel, the H×W map at a tap node has a rank
(`torch.linalg.matrix_rank`, batched over images and channels); the average over all
images is the channel's score (Lin et al., "HRank", CVPR 2020). The model runs in eval
mode without autograd. When a torch.distributed process group is initialised, the rank
sums and image counts are all-reduced, so every process gets the statistics of all data;
a failure on one rank is the same error on every rank (`bitfx.ir.distributed`).
An (N, C, L) tap is ranked as C maps of 1×L, an (N, F) tap as F maps of 1×1, and an
(N, C, D, H, W) tap as C maps of (D·H)×W.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence, Sized
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import fx
from tqdm import tqdm

from bitfx.errors import PassError
from bitfx.ir import eval_mode
from bitfx.ir.distributed import agree, check_same_model, is_distributed
from bitfx.ir.execution import batch_inputs


@dataclass(frozen=True)
class FeatureRanks:
    """Average rank per channel at each tap node, and how much data produced it (all ranks)."""

    ranks: dict[str, torch.Tensor]
    images: int
    batches: int


def average_feature_ranks(
    gm: fx.GraphModule, taps: Sequence[str], data: Iterable[Any], *, max_batches: int
) -> FeatureRanks:
    """Run up to `max_batches` batches of `data` (tensors or (inputs, labels) tuples; inputs is a
    tuple of tensors for a model of several inputs) through `gm` and average the per-channel
    feature-map ranks at the nodes named in `taps`.

    Under torch.distributed every rank first checks that all ranks hold the same graph, then
    runs its own shard and reports whether that failed (an empty shard, a bad batch, NaN/Inf
    at a tap); when one did, every rank raises the same `PassError` before the sums are reduced."""
    check_same_model(gm, PassError, "HRank calibration", plan=list(taps))
    recorder = _RankRecorder(gm, set(taps))
    batches, failure = 0, None
    try:
        batches = _record(recorder, data, max_batches)
        if batches == 0:
            raise PassError("the calibration data is empty: give at least one batch")
    except Exception as error:
        failure = error
    agree(failure, PassError, "HRank calibration")
    sums = [recorder.sums[name] for name in taps]
    totals = torch.cat([*sums, torch.tensor([float(recorder.images), float(batches)], dtype=torch.float64)])
    if is_distributed():
        dist.all_reduce(totals, op=dist.ReduceOp.SUM)
    images, all_batches = int(totals[-2]), int(totals[-1])
    averages = dict(zip(taps, (part / images for part in totals[:-2].split([len(s) for s in sums]))))
    return FeatureRanks(averages, images, all_batches)


def _record(recorder: _RankRecorder, data: Iterable[Any], max_batches: int) -> int:
    """Run up to `max_batches` batches through `recorder`; the number of batches run."""
    batches = 0
    with eval_mode(recorder.module), torch.no_grad():
        total = min(max_batches, len(data)) if isinstance(data, Sized) else max_batches
        for batch in tqdm(
            itertools.islice(data, max_batches), total=total, desc="HRank calibration", unit="batch", leave=False
        ):
            inputs = batch_inputs(batch)
            if not inputs or not all(isinstance(t, torch.Tensor) for t in inputs):
                raise PassError(
                    f"calibration batch {batches} is a {type(batch).__name__}; a batch must be a tensor "
                    "or an (inputs, labels) tuple, where inputs is a tensor or, for a model of several "
                    "inputs, a tuple of tensors"
                )
            recorder.run(*inputs)
            recorder.images += inputs[0].shape[0]
            batches += 1
    return batches


def channel_ranks(maps: torch.Tensor) -> torch.Tensor:
    """(N, C) matrix ranks of the per-channel maps of an (N, C, …) activation."""
    if maps.dim() == 2:
        maps = maps[:, :, None, None]
    elif maps.dim() == 3:
        maps = maps[:, :, None, :]
    elif maps.dim() > 4:
        maps = maps.flatten(2, -2)
    return torch.linalg.matrix_rank(maps.float())


class _RankRecorder(fx.Interpreter):
    """Runs the graph and adds up the channel ranks of the tap nodes' outputs."""

    def __init__(self, gm: fx.GraphModule, taps: set[str]) -> None:
        super().__init__(gm)
        self.taps = taps
        self.sums: dict[str, torch.Tensor] = {}
        self.images = 0

    def run_node(self, n: fx.Node) -> Any:
        value = super().run_node(n)
        if n.name in self.taps:
            if not bool(torch.isfinite(value).all()):
                raise PassError(f"node {n.name!r} holds NaN or Inf on calibration image {self.images} or after it")
            total = channel_ranks(value).sum(dim=0).double()
            self.sums[n.name] = self.sums[n.name] + total if n.name in self.sums else total
        return value


def rank_agreement(vectors: Sequence[Sequence[float]]) -> float | None:
    """Mean pairwise Spearman correlation between score vectors over the same channels (ties
    get their average rank): 1 when every tap orders the channels alike, ~0 when unrelated.
    A constant vector (every map full rank at that tap) orders nothing and is left out. None
    with fewer than three channels or fewer than two non-constant vectors."""
    if not vectors or len(vectors[0]) < 3:
        return None
    ranked = []
    for vector in vectors:
        values = torch.tensor(vector, dtype=torch.float64)
        below = (values.unsqueeze(0) < values.unsqueeze(1)).sum(1)
        equal = (values.unsqueeze(0) == values.unsqueeze(1)).sum(1)
        ranks = below + (equal + 1) / 2
        centred = ranks - ranks.mean()
        if float(centred.norm()) > 0:
            ranked.append(centred / centred.norm())
    if len(ranked) < 2:
        return None
    pairs = [float(a @ b) for a, b in itertools.combinations(ranked, 2)]
    return sum(pairs) / len(pairs)
