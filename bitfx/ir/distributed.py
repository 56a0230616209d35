"""Agreement between torch.distributed ranks before a collective, so that a problem on one
rank is the same clear error on every rank instead of a hang or an abort.

A collective (all_reduce, broadcast) only returns when every rank calls it with tensors of
the same shape. bitfx therefore runs two checks before its own collectives, each itself a
collective that every rank reaches whatever its data:

- `check_same_model`: every rank holds the same graph and the same parameter and buffer
  names, shapes and dtypes, and plans the same reduction (else the collectives that follow
  would not line up);
- `agree`: each rank reports the exception its local work raised (or None); when any rank
  failed, every rank raises the same error, which names the failing ranks and their reasons.

Without an initialised process group both are local: `agree` re-raises the local error.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch.distributed as dist
from torch import fx, nn

from bitfx.errors import BitfxError


def is_distributed() -> bool:
    """True inside an initialised torch.distributed process group."""
    return dist.is_available() and dist.is_initialized()


def agree(local: BaseException | None, error_type: type[BitfxError], what: str) -> None:
    """Raise `error_type` on every rank when `local` is not None on any rank (a collective).

    `what` names the step for the message, e.g. "HRank calibration"."""
    if not is_distributed():
        if local is not None:
            raise local
        return
    reports = gathered(None if local is None else _describe(local))
    failed = [(rank, report) for rank, report in enumerate(reports) if report is not None]
    if failed:
        reasons = "; ".join(f"rank {rank}: {report}" for rank, report in failed)
        raise error_type(
            f"{what} failed on {len(failed)} of {len(reports)} ranks, so every rank stops: {reasons}"
        ) from (local)


def gathered(value: Any) -> list[Any]:
    """`value` of every rank, by rank (a collective; `[value]` without a process group)."""
    if not is_distributed():
        return [value]
    values: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def check_same_model(model: nn.Module, error_type: type[BitfxError], what: str, plan: Any = None) -> None:
    """Raise `error_type` on every rank when the ranks' models differ, or the `plan` of what
    each is about to reduce (e.g. the nodes it measures) differs (a collective)."""
    if not is_distributed():
        return
    reports = gathered((model_signature(model), plan))
    (first, first_plan) = reports[0]
    for rank, (signature, rank_plan) in enumerate(reports[1:], start=1):
        if signature != first:
            raise error_type(f"{what}: the ranks hold different models: {_difference(first, signature, rank)}")
        if rank_plan != first_plan:
            raise error_type(
                f"{what}: rank 0 reduces {first_plan} and rank {rank} {rank_plan}; every rank must run the same "
                "pass with the same parameters"
            )


def model_signature(model: nn.Module) -> tuple[str, list[tuple[str, tuple[int, ...], str]]]:
    """A hash of the graph's code (for a GraphModule) and every parameter and buffer's name,
    shape and dtype: what must be equal on every rank for collectives over the model to line up."""
    code = model.code if isinstance(model, fx.GraphModule) else type(model).__qualname__
    tensors = [*model.named_parameters(), *model.named_buffers()]
    return hashlib.sha256(code.encode()).hexdigest(), [(n, tuple(t.shape), str(t.dtype)) for n, t in tensors]


def _difference(first: Any, other: Any, rank: int) -> str:
    (code0, tensors0), (code, tensors) = first, other
    by_name0, by_name = {n: rest for n, *rest in tensors0}, {n: rest for n, *rest in tensors}
    for name in sorted(set(by_name0) | set(by_name)):
        if by_name0.get(name) != by_name.get(name):
            return f"{name!r} is {_entry(by_name0.get(name))} on rank 0 and {_entry(by_name.get(name))} on rank {rank}"
    if code0 != code:
        return f"the graphs of rank 0 and rank {rank} differ (same parameters, different code)"
    return f"rank {rank} lists its tensors in another order than rank 0"


def _entry(entry: Any) -> str:
    return "missing" if entry is None else f"{entry[1]} {entry[0]}"


def _describe(error: BaseException) -> str:
    return str(error) if isinstance(error, BitfxError) else f"{type(error).__name__}: {error}"
