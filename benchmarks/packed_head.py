"""The packed runtime's serial overhead: the native global average pool and the call tables, against
the numpy head and one Python call per kernel, on the same model.

The binarized ResNet-18 of `benchmarks/packed.py` (seeded, `fuse_bn,binarize`, custom lowering, batch 1,
224×224) is loaded three times, each with its own buffers, and the three run in a random order every
round, at 1 thread, timed by the calling thread's CPU time (`time.thread_time`):
  before   the ReduceMean on numpy (the compiler's native pool declined, so the last stage stays NCHW)
           and the bound steps called one by one from Python (one ctypes call per kernel)
  tables   the same numpy head, the plan's consecutive kernel calls run from tables (`Plan.run`)
  after    what `load` does now: the native pool (last stage channels-last) and the tables
Printed: the medians of the end-to-end runs, of the sum of the steps (each step timed alone, in another
loop) and their difference, the time outside the steps; the head's steps; the ctypes round trips per
run; the outputs' largest difference from `before`; the load average.

    python benchmarks/packed_head.py [--quick] [--repeats N] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from packed import load_average
from packed_layout import binary_resnet18

from bitfx.backends.packed import PackedModel, compiler, set_threads
from bitfx.backends.packed.call_table import parts
from bitfx.backends.packed.executor import Plan


def numpy_head_model(path: Path) -> PackedModel:
    """The model as compiled before the native pool: every ReduceMean / GlobalAveragePool a numpy step."""
    native = compiler.global_avgpool_step
    compiler.global_avgpool_step = lambda node, graph: None
    try:
        return PackedModel(path)
    finally:
        compiler.global_avgpool_step = native


def per_step_run(plan: Plan, x: np.ndarray) -> Callable[[], list[np.ndarray]]:
    """A run of `plan` with every bound step called from Python in turn (the executor before the tables)."""

    def run() -> list[np.ndarray]:
        np.copyto(plan.inputs[0], x)
        for call in plan.calls:
            call()
        return [np.array(value, copy=True, order="C") for value in plan.outputs]

    return run


def compare(path: Path, x: np.ndarray, repeats: int) -> dict:
    models = {"before": numpy_head_model(path), "tables": numpy_head_model(path), "after": PackedModel(path)}
    for model in models.values():
        model.run([x])
    plans = {name: next(iter(model._plans.values())) for name, model in models.items()}
    runs = {
        "before": per_step_run(plans["before"], x),
        "tables": lambda: plans["tables"].run([x]),
        "after": lambda: plans["after"].run([x]),
    }
    reference = runs["before"]()[0]
    difference = {name: float(np.abs(run()[0] - reference).max()) for name, run in runs.items()}
    whole = {name: [] for name in runs}
    steps = {name: [] for name in runs}
    head = {name: {} for name in runs}
    rng = np.random.default_rng(0)
    for _ in range(repeats):
        for name in rng.permutation(list(runs)):
            start = time.thread_time()
            runs[name]()
            whole[name].append(time.thread_time() - start)
        for name, plan in plans.items():
            total = 0.0
            for step, call in zip(plan.steps, plan.calls):
                start = time.thread_time()
                call()
                elapsed = time.thread_time() - start
                total += elapsed
                if "ReduceMean" in step or "GlobalAveragePool" in step or "Gemm" in step:
                    head[name].setdefault(step, []).append(elapsed)
            steps[name].append(total)

    def ms(values: list[float]) -> float:
        return float(np.median(values) * 1000)

    rows = {}
    for name, plan in plans.items():
        trips = sum(len(parts(call)) for call in plan.calls) if name == "before" else len(plan.runners)
        rows[name] = {
            "end_to_end_ms": ms(whole[name]),
            "steps_ms": ms(steps[name]),
            "outside_ms": ms(whole[name]) - ms(steps[name]),
            "head_ms": {step: ms(values) for step, values in head[name].items()},
            "python_calls_per_run": trips,
            "max_abs_difference_from_before": difference[name],
            "channels_first": models[name].report.channels_first,
        }
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs (under a minute)")
    parser.add_argument("--repeats", type=int, default=None, help="rounds (default 1000, --quick 200)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    repeats = args.repeats or (200 if args.quick else 1000)
    torch.set_num_threads(1)
    set_threads(1)
    start_load = load_average()
    with tempfile.TemporaryDirectory() as workdir:
        path, x = binary_resnet18(Path(workdir))
        rows = compare(path, x, repeats)
    print(f"binarized ResNet-18, 1 thread, thread CPU time, medians of {repeats} rounds")
    for name, row in rows.items():
        head = ", ".join(f"{step.split(' (')[1].rstrip(')')} {value:.4f}" for step, value in row["head_ms"].items())
        print(
            f"{name:7s} end to end {row['end_to_end_ms']:.3f} ms | sum of the steps {row['steps_ms']:.3f} ms | "
            f"outside the steps {row['outside_ms']:+.3f} ms | Python calls per run {row['python_calls_per_run']} | "
            f"head: {head} ms | max |difference| {row['max_abs_difference_from_before']:.2e}"
        )
    end_load = load_average()
    print(f"load average {start_load} at start, {end_load} at end")
    if args.json:
        args.json.write_text(json.dumps({"load_average": [start_load, end_load], "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
