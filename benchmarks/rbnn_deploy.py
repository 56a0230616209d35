"""Does RBNN's rotation cost anything at inference? Rotated vs plain binary models, one run.

For each model: `fuse_bn,binarize` and `fuse_bn,binarize,rotate` (after one rotation update,
so the baked signs differ from the plain model's), both lowered in the `custom` style (run
by the packed-bit runtime and by onnxruntime) and the `int8` style (onnxruntime). Reports
the ONNX op counts and file sizes of both, the fraction of binary weights the rotation
changed, and the batch-1 latency of each runtime on both files, timed in alternating
rounds so that the load of a shared machine falls on both alike; the ratio rotated ÷ plain
is the cost of the rotation (1.00 = none).

    python benchmarks/rbnn_deploy.py [--models resnet20,resnet18] [--threads 1] [--rounds 20] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

import torch
from common import median_ms

from bitfx import zoo
from bitfx.backends import packed
from bitfx.backends.onnx import export, load_model, op_counts, run_session, session, verify
from bitfx.ir import capture
from bitfx.ir.binary import BinaryConv2d, DeployedBinaryConv2d
from bitfx.ir.deploy import deployed
from bitfx.ir.table import format_table
from bitfx.passes import Pipeline
from bitfx.train import on_epoch_start

PIPELINES = {"plain": "fuse_bn,binarize", "rotated": "fuse_bn,binarize,rotate"}


def alternating_median_ms(runs: dict[str, object], rounds: int, repeats: int = 5) -> dict[str, float]:
    """Per run, the median over `rounds` of its median time over `repeats` calls; the runs
    take turns round after round."""
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            samples[name].append(median_ms(run, repeats=repeats, warmup=1))
    return {name: statistics.median(values) for name, values in samples.items()}


def measure(name: str, threads: int, rounds: int, workdir: Path) -> dict:
    torch.manual_seed(0)
    model = getattr(zoo, name)().eval()
    x = torch.randn(model.example_input_shape, generator=torch.Generator().manual_seed(0))
    gm = capture(model, x)
    graphs = {label: Pipeline.from_spec(spec).run(gm).graph_module for label, spec in PIPELINES.items()}
    on_epoch_start(graphs["rotated"], 0, 1)
    signs = {
        label: [m.weight for m in deployed(g).modules() if isinstance(m, DeployedBinaryConv2d)]
        for label, g in graphs.items()
    }
    changed = sum(int((a != b).sum()) for a, b in zip(signs["plain"], signs["rotated"])) / sum(
        s.numel() for s in signs["plain"]
    )
    row: dict = {
        "model": name,
        "binary_convs": sum(isinstance(m, BinaryConv2d) for m in graphs["plain"].modules()),
        "signs_changed": changed,
    }
    runs = {}
    for lowering in ("custom", "int8"):
        paths = {
            label: export(g, x, workdir / f"{name}-{label}-{lowering}.onnx", lowering=lowering)
            for label, g in graphs.items()
        }
        ops = {label: op_counts(load_model(path)) for label, path in paths.items()}
        row[f"{lowering}_same_ops"] = ops["plain"] == ops["rotated"]
        row[f"{lowering}_bytes"] = {label: path.stat().st_size for label, path in paths.items()}
        row[f"{lowering}_verify_ok"] = all(verify(path, graphs[label], x).ok for label, path in paths.items())
        for label, path in paths.items():
            runs[f"onnxruntime {lowering}/{label}"] = lambda s=session(path, threads=threads): run_session(
                s, [x.numpy()]
            )
            if lowering == "custom":
                runs[f"packed/{label}"] = lambda m=packed.load(path, threads=threads): m.run([x.numpy()])
    times = alternating_median_ms(runs, rounds)
    row["ms"] = times
    row["ratio"] = {
        runtime.removesuffix("/plain"): times[runtime.replace("/plain", "/rotated")] / ms
        for runtime, ms in times.items()
        if runtime.endswith("/plain")
    }
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet20,resnet18")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(name, args.threads, args.rounds, Path(tmp)) for name in args.models.split(",")]
    load = os.getloadavg()
    print(
        f"batch 1, {args.threads} thread(s), median over {args.rounds} alternating rounds; "
        f"load average {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f}\n"
    )
    body = []
    for r in rows:
        for runtime, ratio in r["ratio"].items():
            lowering = "custom" if runtime.startswith("packed") else runtime.split()[-1]
            body.append(
                (
                    r["model"],
                    runtime,
                    "yes" if r[f"{lowering}_same_ops"] else "NO",
                    "ok" if r[f"{lowering}_verify_ok"] else "FAILED",
                    f"{r['signs_changed']:.0%}",
                    f"{r['ms'][f'{runtime}/plain']:.3f}",
                    f"{r['ms'][f'{runtime}/rotated']:.3f}",
                    f"{ratio:.2f}×",
                )
            )
    print(format_table(
        ("model", "runtime", "same ONNX ops", "verify", "signs changed", "plain ms", "rotated ms", "rotated ÷ plain"),
        body, (False, False, False, False, True, True, True, True),
    ))  # fmt: skip
    if args.json:
        Path(args.json).write_text(
            json.dumps({"load_average": load, "args": vars(args), "results": rows}, indent=2) + "\n"
        )


if __name__ == "__main__":
    main()
