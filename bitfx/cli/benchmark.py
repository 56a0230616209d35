"""`bitfx benchmark FILE [--model SPEC]`: batch latency of an ONNX file in onnxruntime and, for
a `custom` file, in the packed runtime, each at 1 thread and at all threads, next to the float
model (lowered with `float`) when one is given.

1-thread figures are the calling thread's CPU time (`time.thread_time`), which other processes
on a shared machine do not inflate; all-thread figures are wall time. Each is the median of
`--runs` timed runs after `--warmup` untimed ones. The load average is printed before and after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bitfx.backends.onnx import export, load_model, lowering_of, run_session, session
from bitfx.cli.reference import add_model_arguments, captured_model
from bitfx.errors import ModelSpecError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="the ONNX file to time")
    add_model_arguments(parser, model_flag=True)
    parser.add_argument("--batch", type=int, default=1, help="batch size of the timed input (default 1)")
    parser.add_argument("--runs", type=int, default=30, help="timed runs per row; the median is printed (default 30)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs before timing (default 3)")


def run(args: argparse.Namespace) -> int:
    if args.runs < 1 or args.warmup < 0 or args.batch < 1:
        raise ModelSpecError("--runs and --batch must be at least 1 and --warmup at least 0")
    model = load_model(args.file)
    style = lowering_of(model) or "unknown"
    x = _input_for(model, args.batch)
    print(f"load average before: {_load()}")
    rows = _onnxruntime_rows(f"{Path(args.file).name} ({style}), onnxruntime", args.file, x, args)
    if style == "custom":
        rows += _packed_rows(f"{Path(args.file).name} ({style}), packed runtime", args.file, x, args)
    if args.model:
        gm, example = captured_model(args)
        with tempfile.TemporaryDirectory() as folder:
            float_file = export(gm, example, Path(folder) / "float.onnx", lowering="float")
            rows += _onnxruntime_rows(f"{args.model} (float), onnxruntime", float_file, x, args)
    width = max(len(name) for name, _, _ in rows)
    print(f"{'model, runtime':<{width}}  {'threads':>7}  {'median ms':>9}  clock")
    for name, threads, ms in rows:
        clock = "thread CPU" if threads == "1" else "wall"
        print(f"{name:<{width}}  {threads:>7}  {ms:9.3f}  {clock}")
    print(
        f"batch {args.batch}, median of {args.runs} runs after {args.warmup} warm-up runs; "
        f"load average after: {_load()}"
    )
    return 0


def _input_for(model: object, batch: int) -> np.ndarray:
    """A random float32 input of the file's (only) input shape, the dynamic batch set to `batch`."""
    inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    if len(inputs) != 1:
        raise ModelSpecError(f"benchmark times files with one input; this one has {len(inputs)}")
    dims = [d.dim_value if d.HasField("dim_value") else batch for d in inputs[0].type.tensor_type.shape.dim]
    dims[0] = batch
    return np.random.default_rng(0).standard_normal(dims).astype(np.float32)


def _onnxruntime_rows(name: str, path: str | Path, x: np.ndarray, args: argparse.Namespace) -> list[tuple]:
    rows = []
    for threads in (1, None):
        sess = session(path, threads=threads)
        ms = _median_ms(lambda s=sess: run_session(s, [x]), args, single_thread=threads == 1)
        rows.append((name, "1" if threads == 1 else "all", ms))
    return rows


def _packed_rows(name: str, path: str | Path, x: np.ndarray, args: argparse.Namespace) -> list[tuple]:
    from bitfx.backends import packed

    model = packed.load(path)
    rows = []
    try:
        for threads in (1, None):
            packed.set_threads(threads)
            ms = _median_ms(lambda: model.run([x]), args, single_thread=threads == 1)
            rows.append((name, "1" if threads == 1 else f"all ({packed.get_threads()})", ms))
    finally:
        packed.set_threads(None)
    return rows


def _median_ms(step: Callable[[], object], args: argparse.Namespace, *, single_thread: bool) -> float:
    clock = time.thread_time if single_thread else time.perf_counter
    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.runs):
        start = clock()
        step()
        times.append(clock() - start)
    return statistics.median(times) * 1e3


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())
