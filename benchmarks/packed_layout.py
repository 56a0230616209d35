"""Channels-last (NHWC) float activations in the packed runtime against all-NCHW, on the same model.

The binarized ResNet-18 of `benchmarks/packed.py` (seeded, `fuse_bn,binarize`, custom lowering, batch 1,
224×224) is loaded twice: as the compiler lays it out (the float values between binary layers kept
channels-last, `report.channels_last`) and with `channels_last=False` (every value NCHW, as before the
layout existed). The two bound plans take turns, one whole run each, in alternating order, at 1 thread;
every step is timed by the calling thread's CPU time (`time.thread_time`), which the other processes of a
busy machine do not inflate. Printed per vector ISA: the median of every step, their sums per step kind
and over all steps, and the load average. The outputs of the two are checked equal.

    python benchmarks/packed_layout.py [--quick] [--repeats N] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from packed import load_average, step_kind

from bitfx.backends.packed import PackedModel, available_isas, set_isa, set_threads
from bitfx.ir.table import format_table


def binary_resnet18(workdir: Path) -> tuple[Path, np.ndarray]:
    """The lowered binarized ResNet-18 file and its input, seeded as in `benchmarks/packed.py`."""
    from bitfx.backends.onnx import export
    from bitfx.ir import capture
    from bitfx.passes import Pipeline
    from bitfx.zoo import resnet18

    torch.manual_seed(0)
    model = resnet18().eval()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    gm = Pipeline.from_spec("fuse_bn,binarize").run(capture(model, x)).graph_module
    return export(gm, x, workdir / "resnet18_binary.onnx", lowering="custom"), x.numpy()


def compare(path: Path, x: np.ndarray, repeats: int) -> dict:
    """Per-step medians (ms) of the channels-last and the all-NCHW plans, taking turns."""
    models = {"channels_last": PackedModel(path), "nchw": PackedModel(path, channels_last=False)}
    outputs = {name: model.run([x]) for name, model in models.items()}
    if not all(np.array_equal(a, b) for a, b in zip(outputs["channels_last"], outputs["nchw"])):
        raise AssertionError("the channels-last and the NCHW plans give different outputs")
    plans = {name: next(iter(model._plans.values())) for name, model in models.items()}
    for plan in plans.values():
        np.copyto(plan.inputs[0], x)
    times = {name: [[] for _ in plan.calls] for name, plan in plans.items()}
    for turn in range(repeats):
        for name in sorted(plans, reverse=bool(turn % 2)):
            for index, call in enumerate(plans[name].calls):
                start = time.thread_time()
                call()
                times[name][index].append((time.thread_time() - start) * 1000)
    steps = [step for step in models["nchw"].program.steps if not step.is_view]
    rows = []
    for index, step in enumerate(steps):
        nchw, nhwc = (float(np.median(times[name][index])) for name in ("nchw", "channels_last"))
        rows.append({"step": step.name, "kind": step_kind(step), "nchw_ms": nchw, "channels_last_ms": nhwc})
    return {"channels_last_values": models["channels_last"].report.channels_last, "steps": rows}


def print_comparison(isa: str, result: dict) -> None:
    steps = result["steps"]
    print(f"\n{isa}, 1 thread, thread CPU time (medians); channels-last values: {len(result['channels_last_values'])}")
    table = [[row["step"][:58], f"{row['nchw_ms']:.3f}", f"{row['channels_last_ms']:.3f}",
              f"{row['channels_last_ms'] / row['nchw_ms']:.2f}"] for row in steps]  # fmt: skip
    print(format_table(["step", "NCHW ms", "NHWC ms", "NHWC / NCHW"], table, [False, True, True, True]))
    groups = {row["kind"]: [r for r in steps if r["kind"] == row["kind"]] for row in steps}
    groups["all steps"] = steps
    summary = []
    for kind, chosen in groups.items():
        nchw, nhwc = sum(r["nchw_ms"] for r in chosen), sum(r["channels_last_ms"] for r in chosen)
        summary.append([kind, str(len(chosen)), f"{nchw:.3f}", f"{nhwc:.3f}", f"{nhwc / nchw:.2f}"])
    headers = ["kind", "steps", "NCHW ms", "NHWC ms", "NHWC / NCHW"]
    print(format_table(headers, summary, [False, True, True, True, True]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs (about a minute)")
    parser.add_argument("--repeats", type=int, default=None, help="runs of each plan (default 300, --quick 100)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    repeats = args.repeats or (100 if args.quick else 300)
    torch.set_num_threads(1)
    set_threads(1)
    print(f"load average {load_average()} at start")
    results = {}
    with tempfile.TemporaryDirectory() as workdir:
        path, x = binary_resnet18(Path(workdir))
        for isa in [isa for isa in available_isas() if isa != "scalar"]:
            set_isa(isa)
            results[isa] = compare(path, x, repeats)
            print_comparison(isa, results[isa])
    print(f"\nload average {load_average()} at end")
    if args.json:
        args.json.write_text(json.dumps({"load_average": os.getloadavg(), "isas": results}, indent=1))


if __name__ == "__main__":
    main()
