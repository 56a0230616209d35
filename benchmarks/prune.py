"""Channel pruning: onnxruntime latency of the pruned model vs the unpruned one, next to the
MACs reduction, in one run.

For each model: the baseline is `fuse_bn` (the float model onnxruntime would run anyway),
the pruned model is `fuse_bn,rank_prune(rate=R)` calibrated on seeded random batches. Both
are exported to ONNX and timed in onnxruntime on the same input and thread count; the two
are measured in alternating rounds (median of per-round medians) so that load from other
processes hits both alike. The load average is printed with the results.

    python benchmarks/prune.py [--quick] [--rate 0.5] [--threads 1,2] [--batch 1,16] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch
from common import median_ms

from bitfx import zoo
from bitfx.backends.onnx import export, run_session, session, verify
from bitfx.ir import capture, total_cost
from bitfx.ir.table import format_table
from bitfx.passes import Pipeline
from bitfx.zoo import random

MODELS = ["resnet56", "mobilenet_v2", "densenet_tiny", "vgg_small"]


def compile_pair(name: str, rate: float, workdir: Path) -> dict:
    """Export the baseline and the pruned model of `name`; their costs and paths."""
    model = getattr(zoo, name)().eval()
    shape = model.example_input_shape
    data = random(shape, batches=2, batch_size=16)
    gm = capture(model, (data[0],))
    variants = {"unpruned": "fuse_bn", "pruned": f"fuse_bn,rank_prune(rate={rate})"}
    result = {"model": name, "input_shape": list(shape)}
    for label, passes in variants.items():
        graph = Pipeline.from_spec(passes).run(gm, data=data).graph_module
        path = export(graph, (data[0][:1],), workdir / f"{name}-{label}.onnx")
        check = verify(path, graph, (data[1],))
        if not check.ok:
            raise RuntimeError(f"{name} {label}: onnxruntime disagrees with torch ({check.max_rel_error:.3g})")
        cost = total_cost(graph)
        result[label] = {
            "path": str(path),
            "macs": cost.macs,
            "params": cost.params,
            "verify_max_rel_error": check.max_rel_error,
        }
    result["macs_ratio"] = result["pruned"]["macs"] / result["unpruned"]["macs"]
    result["params_ratio"] = result["pruned"]["params"] / result["unpruned"]["params"]
    return result


def time_pair(result: dict, threads: int, batch: int, repeats: int, rounds: int) -> dict:
    """Batch-`batch` latency of both files at `threads` threads, alternating rounds."""
    shape = (batch, *result["input_shape"][1:])
    x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    sessions = {label: session(result[label]["path"], threads=threads) for label in ("unpruned", "pruned")}
    rounds_ms: dict[str, list[float]] = {label: [] for label in sessions}
    for _ in range(rounds):
        for label, sess in sessions.items():
            rounds_ms[label].append(median_ms(lambda sess=sess: run_session(sess, [x]), repeats=repeats))
    unpruned, pruned = (statistics.median(rounds_ms[label]) for label in ("unpruned", "pruned"))
    return {
        "threads": threads,
        "batch": batch,
        "unpruned_ms": unpruned,
        "pruned_ms": pruned,
        "speedup": unpruned / pruned,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="resnet56 and mobilenet_v2 only, batch 1, few repeats")
    parser.add_argument("--rate", type=float, default=0.5)
    parser.add_argument("--threads", default=f"1,{torch.get_num_threads()}")
    parser.add_argument("--batch", default="1,16")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    names = MODELS[:2] if args.quick else MODELS
    threads = sorted({int(t) for t in args.threads.split(",")})
    batches = [1] if args.quick else sorted({int(b) for b in args.batch.split(",")})
    repeats, rounds = (10, 3) if args.quick else (30, 5)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        results = [compile_pair(name, args.rate, Path(tmp)) for name in names]
        for result in results:
            result["latency"] = [time_pair(result, t, b, repeats, rounds) for t in threads for b in batches]
    load_after = os.getloadavg()
    print(
        f"rank_prune(rate={args.rate}) after fuse_bn vs fuse_bn alone; "
        f"onnxruntime CPU, median of {rounds} alternating rounds × {repeats} runs"
    )
    print(
        f"load average (1, 5, 15 min): before {', '.join(f'{v:.2f}' for v in load_before)}; "
        f"after {', '.join(f'{v:.2f}' for v in load_after)}\n"
    )
    print(
        format_table(
            (
                "model",
                "MACs unpruned",
                "MACs pruned",
                "MACs ratio",
                "params ratio",
                "threads",
                "batch",
                "unpruned ms",
                "pruned ms",
                "speed-up",
            ),
            [
                (
                    r["model"],
                    r["unpruned"]["macs"],
                    r["pruned"]["macs"],
                    f"{r['macs_ratio']:.3f}",
                    f"{r['params_ratio']:.3f}",
                    lat["threads"],
                    lat["batch"],
                    f"{lat['unpruned_ms']:.3f}",
                    f"{lat['pruned_ms']:.3f}",
                    f"{lat['speedup']:.2f}×",
                )
                for r in results
                for lat in r["latency"]
            ],
            (False, True, True, True, True, True, True, True, True, True),
        )
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"rate": args.rate, "load_average": {"before": load_before, "after": load_after}, "results": results},
                indent=2,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
