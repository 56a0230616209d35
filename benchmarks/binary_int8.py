"""onnxruntime latency of binarized networks against their float baseline, measured in one run.

For each model: the float model (`fuse_bn`, `float` lowering) and the binarized one
(`fuse_bn,binarize`) lowered in the `int8` style (±1 ConvInteger), and, for context, in the
`float` and `custom` styles (the custom file runs its function bodies, i.e. float convs, in
stock onnxruntime). Batch 1, median of repeated runs, at each thread count; ratios are float
baseline ÷ binarized. Also checks every file against torch and counts the integer convs
onnxruntime runs.

    python benchmarks/binary_int8.py [--models resnet18] [--threads 1,2] [--repeats 50] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from bitfx import zoo
from bitfx.backends.onnx import export, optimized_op_counts, run_session, session, verify
from bitfx.ir import capture
from bitfx.ir.table import format_table
from bitfx.passes import Pipeline

VARIANTS = (
    ("float model", "fuse_bn", "float"),
    ("binary int8", "fuse_bn,binarize", "int8"),
    ("binary float", "fuse_bn,binarize", "float"),
    ("binary custom", "fuse_bn,binarize", "custom"),
)


def interleaved_median_ms(runs: list[Callable[[], object]], *, repeats: int, warmup: int = 5) -> list[float]:
    """Median wall time in ms of each of `runs`, timed in turn round after round, so that the
    load of a shared machine falls on all of them alike."""
    for run in runs:
        for _ in range(warmup):
            run()
    times: list[list[float]] = [[] for _ in runs]
    for _ in range(repeats):
        for run, samples in zip(runs, times):
            start = time.perf_counter()
            run()
            samples.append((time.perf_counter() - start) * 1000)
    return [statistics.median(samples) for samples in times]


def measure(name: str, threads: list[int], repeats: int, workdir: Path) -> list[dict]:
    torch.manual_seed(0)
    model = getattr(zoo, name)().eval()
    x = torch.randn(model.example_input_shape, generator=torch.Generator().manual_seed(0))
    gm = capture(model, x)
    graphs = {passes: Pipeline.from_spec(passes).run(gm).graph_module for passes in {v[1] for v in VARIANTS}}
    rows = []
    for label, passes, lowering in VARIANTS:
        path = export(
            graphs[passes], x, workdir / f"{name}-{lowering}-{passes.replace(',', '+')}.onnx", lowering=lowering
        )
        check = verify(path, graphs[passes], x)
        optimized = optimized_op_counts(path)
        row = {
            "model": name,
            "variant": label,
            "passes": passes,
            "lowering": lowering,
            "verify_ok": check.ok,
            "max_rel_error": check.max_rel_error,
        }
        row["integer_convs"] = optimized.get("ConvInteger", 0)
        row["onnx_bytes"] = path.stat().st_size
        rows.append((row, path))
    for count in threads:
        runs = [lambda sess=session(path, threads=count): run_session(sess, [x.numpy()]) for _, path in rows]
        for (row, _), ms in zip(rows, interleaved_median_ms(runs, repeats=repeats), strict=True):
            row[f"ms_{count}"] = ms
    rows = [row for row, _ in rows]
    baseline = rows[0]
    for row in rows:
        for count in threads:
            row[f"speedup_{count}"] = baseline[f"ms_{count}"] / row[f"ms_{count}"]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet18")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    threads = sorted({int(t) for t in args.threads.split(",")})
    with tempfile.TemporaryDirectory() as tmp:
        rows = [row for name in args.models.split(",") for row in measure(name, threads, args.repeats, Path(tmp))]
    load = os.getloadavg()
    print(f"batch 1, median of {args.repeats} runs; load average {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f}\n")
    headers = (
        "model",
        "variant",
        "lowering",
        "verify",
        "integer convs",
        *(f"ms ({t} thr)" for t in threads),
        *(f"× vs float ({t} thr)" for t in threads),
    )
    body = [
        (r["model"], r["variant"], r["lowering"], "ok" if r["verify_ok"] else "FAILED", r["integer_convs"],
         *(f"{r[f'ms_{t}']:.2f}" for t in threads), *(f"{r[f'speedup_{t}']:.2f}×" for t in threads))
        for r in rows
    ]  # fmt: skip
    print(format_table(headers, body, (False, False, False, False, True, *([True] * 2 * len(threads)))))
    if args.json:
        Path(args.json).write_text(
            json.dumps({"load_average": load, "threads": threads, "repeats": args.repeats, "results": rows}, indent=2)
            + "\n"
        )


if __name__ == "__main__":
    main()
