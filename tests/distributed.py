"""Running a function on two CPU processes joined in a gloo process group, for tests."""

import socket
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    """A TCP port on localhost that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_on_two_ranks(fn: Callable[[int], Any], workdir: Path, *, timeout_seconds: float = 1800) -> list[Any]:
    """Run `fn(rank)` in 2 processes inside an initialised gloo group; return their results.

    `fn` must be a module-level function (it is pickled to the spawned processes), and its
    result must be `torch.save`-able. A collective that waits longer than `timeout_seconds`
    fails (so a hang shows as an error).
    """
    mp.spawn(_entry, args=(fn, free_port(), str(workdir), timeout_seconds), nprocs=2)
    return [torch.load(Path(workdir) / f"{rank}.pt") for rank in range(2)]


def error_of(fn: Callable[[], Any]) -> tuple[str, str] | None:
    """(type name, message) of the exception `fn()` raises, or None: a `torch.save`-able result."""
    try:
        fn()
    except Exception as error:
        return type(error).__name__, str(error)
    return None


def _entry(rank: int, fn: Callable[[int], Any], port: int, workdir: str, timeout_seconds: float) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=2,
        timeout=timedelta(seconds=timeout_seconds),
    )
    try:
        torch.save(fn(rank), f"{workdir}/{rank}.pt")
    finally:
        dist.destroy_process_group()
