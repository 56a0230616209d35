"""onnxruntime latency of binarized networks against their float file and onnxruntime's own int8 model, one run.

For each model: the float file (`fuse_bn`, `float` lowering); the binarized network
(`fuse_bn,binarize`) in the `integer` style (QLinearConv where a layer's output only feeds
the next sign, a channels-last MatMulInteger where a float value is needed) and, for comparison, the `int8`
style (ConvInteger everywhere); and `quantize_static` of the float file (QDQ, per-channel
int8 weights, uint8 activations = U8S8, MinMax on 8 calibration inputs; an approximation of
the float model, not of the binary one). Batch 1; at 1 thread the time is the thread's CPU
time (`time.thread_time`: onnxruntime runs on the calling thread, so other processes on a
shared machine do not inflate it), at 2 threads wall time; the contenders are timed in turn
round after round (at 2 threads a turn is 5 untimed calls, then 10 timed ones, so no session shares the
cores with the previous one's spinning workers) and the median is reported. Ratios are float file ÷ this. The binary
files are checked against torch (layer by layer for `integer`), and the layers onnxruntime
runs on integer kernels (QLinearConv / ConvInteger / MatMulInteger in its optimized graph) are counted.

    python benchmarks/binary_int8.py [--models resnet18,resnet20_digits] [--threads 1,2] [--repeats 30] [--json PATH]
        [--profile]

`--profile` adds onnxruntime's own profile of the `integer` file (1 thread): each op type's
share of the time its nodes ran (the sum of its nodes' median wall times over 20 runs).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from common import interleaved_at_threads, ort_quantize_static
from onnxruntime.quantization import quant_pre_process

import bitfx.zoo as zoo
from bitfx.backends.onnx import export, optimized_op_counts, run_session, session, verifier_for
from bitfx.ir import capture
from bitfx.ir.table import format_table
from bitfx.passes import Pipeline
from bitfx.zoo import digits

# name → (zoo model, input shape, calibration inputs)
MODELS: dict[str, tuple[str, tuple[int, ...]]] = {
    "resnet18": ("resnet18", (1, 3, 224, 224)),
    "resnet20_digits": ("resnet20", (1, 3, 16, 16)),
}
BINARY = (("binary integer", "integer"), ("binary int8", "int8"))
INTEGER_KERNELS = ("QLinearConv", "com.microsoft.QLinearConv", "ConvInteger", "MatMulInteger")


def op_shares(path: Path, inputs: list[np.ndarray], runs: int = 20) -> dict[str, float]:
    """Each op type's share of the node time in onnxruntime's profile of `runs` runs of `path` at 1 thread
    (every node's median time, summed by op type)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    options.enable_profiling = True
    options.profile_file_prefix = str(path.with_suffix(""))
    sess = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for _ in range(runs):
        run_session(sess, inputs)
    events = json.loads(Path(sess.end_profiling()).read_text())
    durations: dict[tuple[str, str], list[float]] = {}
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            durations.setdefault((event["args"]["op_name"], event["name"]), []).append(event["dur"])
    times: dict[str, float] = {}
    for (op, _), samples in durations.items():  # a node's median: a run the machine preempted does not count
        times[op] = times.get(op, 0.0) + statistics.median(samples)
    total = sum(times.values())
    return {op: t / total for op, t in sorted(times.items(), key=lambda item: -item[1])}


def _calibration(name: str, shape: tuple[int, ...]) -> list[np.ndarray]:
    if name == "resnet20_digits":
        images = digits(shape, split="train", batch_size=1)
        return [images[i][0].numpy() for i in range(8)]
    return [torch.randn(shape, generator=torch.Generator().manual_seed(i)).numpy() for i in range(8)]


def measure(name: str, threads: list[int], repeats: int, workdir: Path, profile: bool = False) -> list[dict]:
    zoo_name, shape = MODELS[name]
    torch.manual_seed(0)
    model = getattr(zoo, zoo_name)().eval()
    calibration = _calibration(name, shape)
    x = torch.from_numpy(calibration[0])
    float_gm = Pipeline.from_spec("fuse_bn").run(capture(model, x)).graph_module
    binary_gm = Pipeline.from_spec("fuse_bn,binarize").run(capture(model, x)).graph_module
    float_path = export(float_gm, x, workdir / f"{name}-float.onnx", lowering="float")
    rows = [({"variant": "float file", "check": "reference"}, float_path)]
    for label, lowering in BINARY:
        path = export(binary_gm, x, workdir / f"{name}-{lowering}.onnx", lowering=lowering)
        check = verifier_for(lowering)(path, binary_gm, x)
        rows.append(
            ({"variant": label, "check": "ok" if check.ok else "FAILED", "max_rel_error": check.max_rel_error}, path)
        )
    prepared, quantized = workdir / f"{name}-prepared.onnx", workdir / f"{name}-u8s8.onnx"
    quant_pre_process(float_path, prepared)
    ort_quantize_static(prepared, quantized, session(float_path).get_inputs()[0].name, calibration)
    rows.append(({"variant": "quantize_static U8S8", "check": "approximate"}, quantized))
    for row, path in rows:
        optimized = optimized_op_counts(path)
        kernels = sum(optimized.get(op, 0) for op in INTEGER_KERNELS)
        row.update(model=name, onnx_bytes=path.stat().st_size, integer_kernels=kernels)
        row["qlinear_convs"] = optimized.get("QLinearConv", 0) + optimized.get("com.microsoft.QLinearConv", 0)
    for count in threads:
        runs = [lambda sess=session(path, threads=count): run_session(sess, [x.numpy()]) for _, path in rows]
        medians = interleaved_at_threads(runs, threads=count, repeats=repeats)
        for (row, _), ms in zip(rows, medians, strict=True):
            row[f"ms_{count}"] = ms
    if profile:
        row, path = rows[1]
        row["op_shares"] = op_shares(path, [x.numpy()])
    rows = [row for row, _ in rows]
    for row in rows:
        for count in threads:
            row[f"speedup_{count}"] = rows[0][f"ms_{count}"] / row[f"ms_{count}"]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--profile", action="store_true", help="op-type profile of the integer file")
    args = parser.parse_args()
    threads = sorted({int(t) for t in args.threads.split(",")})
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [
            row
            for name in args.models.split(",")
            for row in measure(name, threads, args.repeats, Path(tmp), args.profile)
        ]
    load_after = os.getloadavg()
    before, after = (", ".join(f"{v:.2f}" for v in load) for load in (load_before, load_after))
    print(
        f"batch 1, median of {args.repeats} interleaved runs (1 thread: thread CPU time; 2 threads: wall time); "
        f"load average before {before}, after {after}\n"
    )
    headers = (
        "model",
        "variant",
        "check",
        "integer kernels (QLinearConv)",
        *(f"ms ({t} thr)" for t in threads),
        *(f"float ÷ this ({t} thr)" for t in threads),
        "MB",
    )
    body = [
        (
            r["model"],
            r["variant"],
            r["check"],
            f"{r['integer_kernels']} ({r['qlinear_convs']})",
            *(f"{r[f'ms_{t}']:.2f}" for t in threads),
            *(f"{r[f'speedup_{t}']:.2f}×" for t in threads),
            f"{r['onnx_bytes'] / 1e6:.2f}",
        )
        for r in rows
    ]
    print(format_table(headers, body, (False, False, False, True, *([True] * 2 * len(threads)), True)))
    for row in rows:
        if "op_shares" in row:
            shares = ", ".join(f"{op} {share:.0%}" for op, share in row["op_shares"].items() if share >= 0.01)
            print(f"\n{row['model']} {row['variant']}, onnxruntime profile (1 thread): {shares}")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "load_average": [load_before, load_after],
                    "threads": threads,
                    "repeats": args.repeats,
                    "results": rows,
                },
                indent=2,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
