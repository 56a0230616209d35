"""Compile-time and float-baseline benchmark of every example model, in one run.

For each model of the zoo: how long capture, each pass, ONNX export and verification
take, and the batch-1 latency of the float model in torch eager and in onnxruntime on the
same input and the same thread count (the baseline every compression pass is compared to).

    python benchmarks/pipeline.py [--quick] [--threads 1,2] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from common import median_ms, timed

from bitfx import zoo
from bitfx.backends.onnx import export, run_session, session, verify
from bitfx.ir import capture
from bitfx.ir.table import format_table
from bitfx.passes import Pipeline


def measure(name: str, passes: str, threads: list[int], repeats: int, workdir: Path) -> dict:
    model = getattr(zoo, name)().eval()
    x = torch.randn(model.example_input_shape, generator=torch.Generator().manual_seed(0))
    gm, capture_s = timed(lambda: capture(model, x))
    result, pipeline_s = timed(lambda: Pipeline.from_spec(passes).run(gm))
    path, export_s = timed(lambda: export(result.graph_module, x, workdir / f"{name}.onnx"))
    check, verify_s = timed(lambda: verify(path, result.graph_module, x))
    latency = []
    for count in threads:
        torch.set_num_threads(count)
        ort = session(path, threads=count)
        with torch.no_grad():
            torch_ms = median_ms(lambda: model(x), repeats=repeats)
        ort_ms = median_ms(lambda: run_session(ort, [x.numpy()]), repeats=repeats)
        latency.append(
            {"threads": count, "torch_ms": torch_ms, "ort_ms": ort_ms, "ort_speedup_vs_torch": torch_ms / ort_ms}
        )
    return {
        "model": name,
        "input_shape": list(x.shape),
        "seconds": {"capture": capture_s, "pipeline": pipeline_s, "export": export_s, "verify": verify_s},
        "passes": [{"name": r.name, "seconds": r.seconds, "modified": r.modified} for r in result.records],
        "verify_max_rel_error": check.max_rel_error,
        "onnx_bytes": path.stat().st_size,
        "latency": latency,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="three small models and few repeats (under a minute)")
    parser.add_argument("--threads", default=f"1,{torch.get_num_threads()}", help="thread counts to measure latency at")
    parser.add_argument("--passes", default="fuse_bn")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    names = ["resnet20", "vgg_small", "edsr_lite"] if args.quick else list(zoo.MODELS)
    threads = sorted({int(t) for t in args.threads.split(",")})
    with tempfile.TemporaryDirectory() as tmp:
        results = [measure(name, args.passes, threads, 10 if args.quick else 50, Path(tmp)) for name in names]
    print(f"passes: {args.passes}\n")
    print(
        format_table(
            ("model", "capture s", "pipeline s", "export s", "verify s", "rel err"),
            [
                (
                    r["model"],
                    *(f"{r['seconds'][k]:.3f}" for k in ("capture", "pipeline", "export", "verify")),
                    f"{r['verify_max_rel_error']:.1e}",
                )
                for r in results
            ],
            (False, True, True, True, True, True),
        )
    )
    print()
    print(
        format_table(
            ("model", "threads", "torch ms", "onnxruntime ms", "ort speed-up"),
            [
                (
                    r["model"],
                    l["threads"],
                    f"{l['torch_ms']:.2f}",
                    f"{l['ort_ms']:.2f}",
                    f"{l['ort_speedup_vs_torch']:.2f}×",
                )
                for r in results
                for l in r["latency"]
            ],
            (False, True, True, True, True),
        )
    )
    if args.json:
        Path(args.json).write_text(json.dumps({"passes": args.passes, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
