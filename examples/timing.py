"""Timing helpers shared by the example scripts and the benchmarks."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_ms(
    fn: Callable[[], object], *, repeats: int, warmup: int = 2, clock: Callable[[], float] = time.perf_counter
) -> float:
    """Median time of `fn()` in milliseconds by `clock` (wall time by default; `time.thread_time`
    counts only the calling thread's CPU time), after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = clock()
        fn()
        times.append((clock() - start) * 1000)
    return statistics.median(times)


def timed(fn: Callable[[], object]) -> tuple[object, float]:
    """`fn()`'s result and how long it took, in seconds."""
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def median_cpu_ms(fn: Callable[[], object], *, repeats: int, warmup: int = 3) -> float:
    """Median CPU time of the calling thread over `fn()` calls, in milliseconds.

    Measures the work of a runtime set to one thread (it runs on the caller's thread), and is
    not inflated by other processes competing for the cores, as wall time would be."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.thread_time()
        fn()
        times.append((time.thread_time() - start) * 1000)
    return statistics.median(times)


def interleaved_median_ms(
    runs: list[Callable[[], object]],
    *,
    repeats: int,
    clock: Callable[[], float] = time.perf_counter,
    warmup: int = 5,
    block: int = 1,
    settle: int = 0,
) -> list[float]:
    """Median time in ms of each of `runs` by `clock`, the runs taking turns so that the load of a
    shared machine falls on all of them alike. A turn is `settle` untimed calls, then `block` timed
    ones: with several threads, every runtime's idle workers spin for a while after a call, and a run
    timed right after another would share the cores with the previous one's spinning threads."""
    for run in runs:
        for _ in range(warmup):
            run()
    times: list[list[float]] = [[] for _ in runs]
    for _ in range(-(-repeats // block)):
        for run, samples in zip(runs, times):
            for _ in range(settle):
                run()
            for _ in range(block):
                start = clock()
                run()
                samples.append((clock() - start) * 1000)
    return [statistics.median(samples) for samples in times]


TURN_BLOCK, TURN_SETTLE = 10, 5
"""With several threads, a turn of `interleaved_at_threads` is TURN_SETTLE untimed calls, then TURN_BLOCK timed ones."""


def clock_for(threads: int) -> Callable[[], float]:
    """The calling thread's CPU time for 1-thread runs (a runtime set to one thread works on the
    calling thread, and other processes do not inflate it), wall time otherwise."""
    return time.thread_time if threads == 1 else time.perf_counter


def interleaved_at_threads(
    runs: list[Callable[[], object]], *, threads: int, repeats: int, warmup: int = 5
) -> list[float]:
    """`interleaved_median_ms` for runtimes set to `threads` threads: thread CPU time and one call
    per turn at 1 thread; wall time and blocks after settling calls otherwise."""
    block, settle = (1, 0) if threads == 1 else (TURN_BLOCK, TURN_SETTLE)
    return interleaved_median_ms(
        runs, repeats=repeats, clock=clock_for(threads), warmup=warmup, block=block, settle=settle
    )
