"""Running a function on two CPU processes joined in a gloo process group, for tests."""

import socket
from collections.abc import Callable
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


def run_on_two_ranks(fn: Callable[[int], Any], workdir: Path) -> list[Any]:
    """Run `fn(rank)` in 2 processes inside an initialised gloo group; return their results.

    `fn` must be a module-level function (it is pickled to the spawned processes), and its
    result must be `torch.save`-able.
    """
    mp.spawn(_entry, args=(fn, free_port(), str(workdir)), nprocs=2)
    return [torch.load(Path(workdir) / f"{rank}.pt") for rank in range(2)]


def _entry(rank: int, fn: Callable[[int], Any], port: int, workdir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        torch.save(fn(rank), f"{workdir}/{rank}.pt")
    finally:
        dist.destroy_process_group()
