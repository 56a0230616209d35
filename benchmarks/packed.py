"""Packed-bit runtime vs float, measured side by side in one run.

Per layer: the binary 3×3 convolutions of ResNet-18 (stride 1, at 56, 28, 14 and 7 pixels,
batch 1), at 1 thread and at all threads, with the best ISA and with AVX2 forced:
  packed_ms    our kernel from float NCHW input to float NCHW output (packing, XNOR-popcount,
               exact zero-padding correction and output transform all included)
  chain_ms     the same layer inside a binary chain: packed input, packed output (thresholds)
  torch_ms     torch float32 conv2d on the same shape (oneDNN)
  ort_ms       onnxruntime float32 Conv on the same shape
  pct_of_peak  bit-MACs/s of packed_ms as a share of the XOR+popcount peak measured just before
               (pct_of_best_peak: of the best peak seen in the run, the conservative figure)
  conv_ms      the convolution alone, packed input → float output (no packing)
End to end: ResNet-18 (first conv and fc float, every other conv binary; fuse_bn,binarize →
custom lowering) in the packed executor vs the float ResNet-18 in onnxruntime and torch, and vs
onnxruntime int8 (`quantize_static`, QDQ, U8S8, per channel, of the same float model); model
file sizes; peak memory of a process that loads and runs each model.
Breakdown: the time of every step of the packed end-to-end run (1 thread), summed by kind, and
the ResNet-18 3×3 layers in the network next to the same shapes measured alone. Thread scaling:
the wall time of every step at 1 and at the largest thread count, the two taking turns, summed by
kind, with the part of a run outside the steps (input and output copies), which is serial.
Contended: a second process keeps one core busy while the packed model runs at 1 and 2 threads
(and onnxruntime int8 for comparison); `two_thread_over_one_thread` is the 2-thread latency over
the 1-thread latency (≤ 1 means the second thread helps even when its core is taken).

    python benchmarks/packed.py [--quick] [--json PATH] [--threads 1,2] [--skip-end-to-end]
                                [--breakdown] [--contended] [--int8-stem]

`--breakdown` prints every step; `--contended` runs only the contended measurement (the full run
includes it); `--int8-stem` adds the packed model with its float stem on the int8 kernel
(`load(..., int8_float_convs=...)`, calibrated on onnxruntime's int8 calibration images), its
breakdown, and the stem alone (conv then pool, fused, fused int8) on each vector ISA. 1-thread
figures are the calling thread's CPU time (`time.thread_time`), which the other processes of a
busy machine do not inflate; multi-thread figures are wall time. Candidates
are interleaved (one call of each per round) and the median is reported. The machine's load
average is recorded next to the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from common import TURN_BLOCK, TURN_SETTLE, clock_for, interleaved_at_threads, median_ms, ort_quantize_static
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import quant_pre_process

from bitfx.backends.packed import PackedModel, available_isas, cpu_count, get_isa, popcount_peak, set_isa, set_threads
from bitfx.backends.packed import kernels as k
from bitfx.backends.packed import reference as ref
from bitfx.backends.packed.kernel_steps import BinaryConvStep, FloatConvStep
from bitfx.ir.table import format_table
from examples.memory import peak_memory_mb

STEM_KINDS = (
    "float conv",
    "float max pool",
    "float conv + max pool (fused)",
    "int8 conv",
    "int8 conv + max pool (fused)",
)
LAYERS = [(56, 64), (28, 128), (14, 256), (7, 512)]  # (pixels, channels) of ResNet-18's 3×3 binary convs


def load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def interleaved_ms(
    fns: dict[str, Callable[[], object]], repeats: int, threads: int, warmup: int = 2
) -> dict[str, float]:
    """Median time of each function in ms, the candidates taking turns (`interleaved_at_threads`)."""
    medians = interleaved_at_threads(list(fns.values()), threads=threads, repeats=repeats, warmup=warmup)
    return dict(zip(fns, medians, strict=True))


def measure_stem(repeats: int) -> list[dict]:
    """ResNet-18's stem alone (64×3×7×7/2 conv + Relu, 3×3/2 max pool, 224², 1 thread) on each
    vector ISA: the float conv then the pool, the fused float stem, the fused int8 stem, NCHW output,
    and both fused stems writing channels-last (as in the compiled network, whose next step reads NHWC)."""
    from bitfx.backends.packed.int8_conv import Int8Conv

    rng = np.random.default_rng(3)
    weight = rng.normal(size=(64, 3, 7, 7)).astype(np.float32)
    x = np.concatenate(calibration_images()[:1])
    window, pool = k.Window((7, 7), (2, 2), (3, 3, 3, 3)), k.MaxPool(k.Window((3, 3), (2, 2), (1, 1, 1, 1)))
    conv, int8 = k.FloatConv(weight, window=window), Int8Conv(weight, window=window, input_range=(-4.5, 4.5))
    relu = (0.0, np.inf)
    full = np.empty((1, 64, 112, 112), np.float32)
    then_conv, then_pool = (
        conv.bind(x, full, clamp=relu),
        k.bind_float_maxpool(full, np.empty((1, 64, 56, 56), np.float32), pool.window),
    )
    fused = conv.bind(x, np.empty((1, 64, 56, 56), np.float32), clamp=relu, pool=pool)
    fused_int8 = int8.bind(x, np.empty((1, 64, 56, 56), np.float32), clamp=relu, pool=pool)
    fused_nhwc = conv.bind(x, k.empty_channels_last((1, 64, 56, 56)), clamp=relu, pool=pool)
    fused_int8_nhwc = int8.bind(x, k.empty_channels_last((1, 64, 56, 56)), clamp=relu, pool=pool)
    set_threads(1)
    rows, previous = [], get_isa()
    for isa in [isa for isa in ("avx512", "avx2") if isa in available_isas()]:
        set_isa(isa)
        times = interleaved_ms(
            {
                "conv_then_pool": lambda: (then_conv(), then_pool()),
                "fused": fused,
                "fused_int8": fused_int8,
                "fused_nhwc": fused_nhwc,
                "fused_int8_nhwc": fused_int8_nhwc,
            },
            repeats,
            1,
        )
        rows.append({"isa": isa, **{f"{name}_ms": ms for name, ms in times.items()}, "load_average": load_average()})
    set_isa(previous)  # the end-to-end run keeps the ISA the run started with (BITFX_PACKED_ISA)
    return rows


def ort_conv_session(channels: int, weight: np.ndarray, threads: int) -> ort.InferenceSession:
    node = helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    graph = helper.make_graph(
        [node], "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, None, None])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [numpy_helper.from_array(weight, "w")],
    )  # fmt: skip
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads, options.log_severity_level = threads, 1, 3
    return ort.InferenceSession(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString(),
        options,
        providers=["CPUExecutionProvider"],
    )


def measure_layer(pixels: int, channels: int, threads: int, isa: str, peak: float, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, channels, pixels, pixels)).astype(np.float32)
    weight = rng.normal(size=(channels, channels, 3, 3)).astype(np.float32)
    scale, bias = rng.uniform(0.5, 1.5, channels).astype(np.float32), rng.normal(size=channels).astype(np.float32)
    window = k.Window((3, 3), pads=(1, 1, 1, 1))
    conv = k.BinaryConv(
        ref.pack_conv_weights(weight), scale, bias, window=window, group=1, in_channels=channels, pad_value=0
    )
    packed_in = k.PackedTensor.empty(1, channels, pixels, pixels, border=(1, 1, 1, 1))
    out = np.empty((1, channels, pixels, pixels), np.float32)
    pack, run = k.bind_pack(x, packed_in), conv.bind(packed_in, out)
    pack()
    run()
    assert np.array_equal(
        out,
        ref.binary_conv2d(
            x, ref.pack_conv_weights(weight), scale, bias, kernel_shape=(3, 3), pads=(1, 1, 1, 1), in_channels=channels
        ),
    )
    chained = k.BinaryConv(
        ref.pack_conv_weights(weight), scale, bias, window=window, group=1, in_channels=channels, pad_value=0
    )
    chained.set_packed_output(np.zeros(channels, np.int64), np.zeros(channels, bool))
    packed_out = k.PackedTensor.empty(1, channels, pixels, pixels, border=(1, 1, 1, 1))
    run_chain = chained.bind(packed_in, packed_out)

    def packed_layer() -> None:
        pack()
        run()

    torch.set_num_threads(threads)
    tx, tw = torch.from_numpy(x), torch.from_numpy(weight)
    sess = ort_conv_session(channels, weight, threads)

    def torch_conv() -> None:
        with torch.no_grad():
            torch.nn.functional.conv2d(tx, tw, padding=1)

    # two interleaved groups: the packed variants share weights and input, which torch and
    # onnxruntime would evict from the caches between them
    times = interleaved_ms({"packed": packed_layer, "conv": run, "chain": run_chain}, repeats, threads)
    times |= interleaved_ms({"torch": torch_conv, "ort": lambda: sess.run(None, {"x": x})}, repeats, threads)
    packed_ms, conv_ms, chain_ms, torch_ms, ort_ms = (times[key] for key in ("packed", "conv", "chain", "torch", "ort"))
    bit_macs = pixels * pixels * channels * channels * 9
    return {
        "shape": f"{channels}x{pixels}x{pixels} 3x3",
        "pixels": pixels,
        "channels": channels,
        "threads": threads,
        "isa": isa,
        "packed_ms": packed_ms,
        "conv_ms": conv_ms,
        "chain_ms": chain_ms,
        "torch_ms": torch_ms,
        "ort_ms": ort_ms,
        "speedup_vs_torch": torch_ms / packed_ms,
        "speedup_vs_ort": ort_ms / packed_ms,
        "chain_speedup_vs_torch": torch_ms / chain_ms,
        "pct_of_peak": 100 * bit_macs / (packed_ms * 1e-3) / peak,
        "chain_pct_of_peak": 100 * bit_macs / (chain_ms * 1e-3) / peak,
        "conv_pct_of_peak": 100 * bit_macs / (conv_ms * 1e-3) / peak,
        "peak_bit_macs_per_s": peak,
    }


def quantize_int8(float_path: Path, workdir: Path, input_name: str) -> Path:
    """onnxruntime's own int8 model of the float file: `quantize_static`, QDQ, uint8 activations,
    int8 per-channel weights (U8S8), MinMax calibration on 8 random inputs."""
    prepared, path = workdir / "resnet18_float_prepared.onnx", workdir / "resnet18_int8.onnx"
    quant_pre_process(float_path, prepared)
    return ort_quantize_static(prepared, path, input_name, calibration_images())


def calibration_images() -> list[np.ndarray]:
    """The 8 seeded images that calibrate onnxruntime's int8 model and the packed int8 stem."""
    rng = np.random.default_rng(2)
    return [rng.normal(size=(1, 3, 224, 224)).astype(np.float32) for _ in range(8)]


def step_kind(step: object) -> str:
    """What a step of the packed program is, for the breakdown."""
    name = type(step).__name__
    if isinstance(step, BinaryConvStep):
        return "binary conv (packed out)" if step.packed_out is not None else "binary conv (float out)"
    if isinstance(step, FloatConvStep) and "[int8]" in step.name:
        return "int8 conv" + (" + max pool (fused)" if step.pool is not None else "")
    if isinstance(step, FloatConvStep) and step.pool is not None:
        return "float conv + max pool (fused)"
    return {
        "FloatConvStep": "float conv",
        "FloatMaxPoolStep": "float max pool",
        "BinaryMaxPoolStep": "binary max pool",
        "PackStep": "pack",
        "FloatGemmStep": "float gemm",
        "GlobalAvgPoolStep": "global average pool",
    }.get(name, "other (numpy)")


def breakdown(packed: PackedModel, x: np.ndarray, repeats: int) -> list[dict]:
    """Median thread CPU time of every bound step of the packed plan (1 thread), in run order,
    with each step's kind and, for binary convolutions, its input channels, output size and stride."""
    packed.run([x])
    (plan,) = packed._plans.values()
    steps = [step for step in packed.program.steps if not step.is_view]
    times = [[] for _ in plan.calls]
    for buffer, array in zip(plan.inputs, [x]):
        np.copyto(buffer, array)
    for _ in range(repeats + 2):
        for index, call in enumerate(plan.calls):
            start = time.thread_time()
            call()
            times[index].append((time.thread_time() - start) * 1000)
    rows = []
    for step, values in zip(steps, times):
        row = {"step": step.name, "kind": step_kind(step), "ms": float(np.median(values[2:]))}
        if isinstance(step, BinaryConvStep) and not step.gemm:
            conv = step.conv
            (height, width) = next(iter(conv._tables))
            row.update(
                in_channels=conv.in_channels,
                out_channels=conv.out_channels,
                pixels=conv.out_size(height, width)[0],
                kernel=list(conv.window.kernel),
                stride=list(conv.window.strides),
            )
        rows.append(row)
    return rows


def thread_breakdown(packed: PackedModel, x: np.ndarray, repeats: int, threads: int) -> dict:
    """Wall time of every bound step at 1 and at `threads` threads, the two counts taking turns (a
    turn is `TURN_SETTLE` untimed runs of the plan, then `TURN_BLOCK` timed ones), and of the whole run, whose
    part outside the steps (copying the input in and the outputs out) is serial. Returns per-kind
    medians summed over steps and `outside_ms` per thread count."""
    packed.run([x])
    (plan,) = packed._plans.values()
    steps = [step for step in packed.program.steps if not step.is_view]
    counts = (1, threads)
    times = {count: [[] for _ in plan.calls] for count in counts}
    whole = {count: [] for count in counts}
    for _ in range(-(-repeats // TURN_BLOCK)):
        for count in counts:
            set_threads(count)
            for _ in range(TURN_SETTLE):
                plan.run([x])
            for _ in range(TURN_BLOCK):
                for index, call in enumerate(plan.calls):
                    start = time.perf_counter()
                    call()
                    times[count][index].append((time.perf_counter() - start) * 1000)
                start = time.perf_counter()
                plan.run([x])
                whole[count].append((time.perf_counter() - start) * 1000)
    set_threads(1)
    kinds: dict[str, dict[int, float]] = {}
    for index, step in enumerate(steps):
        kind = kinds.setdefault(step_kind(step), {count: 0.0 for count in counts} | {"steps": 0})
        kind["steps"] += 1
        for count in counts:
            kind[count] += float(np.median(times[count][index]))
    run_ms = {count: float(np.median(whole[count])) for count in counts}
    step_sum = {count: sum(kind[count] for kind in kinds.values()) for count in counts}
    return {
        "threads": threads,
        "kinds": {name: {str(key): value for key, value in kind.items()} for name, kind in kinds.items()},
        "run_ms": {str(count): run_ms[count] for count in counts},
        "steps_ms": {str(count): step_sum[count] for count in counts},
        "outside_ms": {str(count): run_ms[count] - step_sum[count] for count in counts},
        "load_average": load_average(),
    }


def in_network_layers(steps: list[dict], layers: list[dict]) -> list[dict]:
    """The ResNet-18 3×3 stride-1 layers inside the network (median over the layers of that shape
    and output kind) next to the same shape alone (chain_ms for packed output, conv_ms for float)."""
    isolated = {r["pixels"]: r for r in layers if r["threads"] == 1 and r["isa"] == layers[0]["isa"]}
    rows = []
    for pixels, channels in LAYERS:
        for kind, key in (("binary conv (packed out)", "chain_ms"), ("binary conv (float out)", "conv_ms")):
            found = [
                s["ms"]
                for s in steps
                if s["kind"] == kind
                and s.get("pixels") == pixels
                and s.get("in_channels") == channels == s.get("out_channels")
                and s.get("stride") == [1, 1]
                and s.get("kernel") == [3, 3]
            ]
            if not found or pixels not in isolated:
                continue
            alone = isolated[pixels]
            network_ms = float(np.median(found))
            rows.append(
                {
                    "shape": f"{channels}x{pixels}x{pixels} 3x3",
                    "output": kind.split("(")[1].rstrip(")"),
                    "count": len(found),
                    "in_network_ms": network_ms,
                    "isolated_ms": alone[key],
                    "in_network_over_isolated": network_ms / alone[key],
                    "in_network_pct_of_peak": alone["pct_of_peak"] * alone["packed_ms"] / network_ms,
                }
            )
    return rows


BUSY_LOOP = "while True:\n    pass\n"


def measure_contended(
    packed: PackedModel, int8: ort.InferenceSession, int8_2: ort.InferenceSession, x: np.ndarray, repeats: int
) -> dict:
    """Latency (wall time) at 1 and 2 threads while another process keeps one core busy."""
    from bitfx.backends.onnx import run_session

    busy = subprocess.Popen([sys.executable, "-c", BUSY_LOOP])
    try:
        time.sleep(0.5)
        load = load_average()

        def packed_at(count: int) -> Callable[[], object]:
            def run() -> None:
                set_threads(count)
                packed.run([x])

            return run

        times = interleaved_ms(
            {
                "packed_1": packed_at(1),
                "packed_2": packed_at(2),
                "ort_int8_1": lambda: run_session(int8, [x]),
                "ort_int8_2": lambda: run_session(int8_2, [x]),
            },
            repeats,
            threads=2,  # wall time for all: the point is the latency the caller sees
        )
    finally:
        busy.kill()
        busy.wait()
    return {
        "load_average": load,
        "packed_1_thread_ms": times["packed_1"],
        "packed_2_threads_ms": times["packed_2"],
        "ort_int8_1_thread_ms": times["ort_int8_1"],
        "ort_int8_2_threads_ms": times["ort_int8_2"],
        "two_thread_over_one_thread": times["packed_2"] / times["packed_1"],
        "ort_int8_two_thread_over_one_thread": times["ort_int8_2"] / times["ort_int8_1"],
    }


def build_models(workdir: Path) -> tuple[torch.nn.Module, torch.Tensor, Path, Path, Path]:
    """ResNet-18 (seeded) and its float, binary (custom lowering) and onnxruntime int8 files."""
    from bitfx.backends.onnx import export, session
    from bitfx.ir import capture
    from bitfx.passes import Pipeline
    from bitfx.zoo import resnet18

    torch.manual_seed(0)
    model = resnet18().eval()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    gm = capture(model, x)
    float_path = export(Pipeline.from_spec("fuse_bn").run(gm).graph_module, x, workdir / "resnet18_float.onnx")
    binary_path = export(
        Pipeline.from_spec("fuse_bn,binarize").run(gm).graph_module,
        x,
        workdir / "resnet18_binary.onnx",
        lowering="custom",
    )
    int8_path = quantize_int8(float_path, workdir, session(float_path).get_inputs()[0].name)
    return model, x, float_path, binary_path, int8_path


def measure_end_to_end(
    threads: list[int], repeats: int, workdir: Path, layers: list[dict], int8_stem: bool = False
) -> dict:
    from bitfx.backends.onnx import available_lowerings, run_session, session

    if "custom" not in available_lowerings():
        return {"skipped": "the custom lowering is not available"}
    model, x, float_path, binary_path, int8_path = build_models(workdir)
    packed = PackedModel(binary_path)
    xn = x.numpy()
    # the int8 stem's input range: the calibration images of onnxruntime's int8 model (quantize_int8)
    packed_int8 = PackedModel(binary_path, int8_float_convs=np.concatenate(calibration_images())) if int8_stem else None
    reference_out = run_session(session(binary_path), [xn])[0]
    packed_out = packed.run([xn])[0]
    rows = []
    for count in threads:
        torch.set_num_threads(count)
        set_threads(count)
        ort_float, ort_int8 = session(float_path, threads=count), session(int8_path, threads=count)

        def torch_float() -> None:
            with torch.no_grad():
                model(x)

        contenders = {"packed_int8_stem": lambda: packed_int8.run([xn])} if packed_int8 else {}
        times = interleaved_ms(
            {
                **contenders,
                "packed": lambda: packed.run([xn]),
                "ort_float": lambda: run_session(ort_float, [xn]),
                "ort_int8": lambda: run_session(ort_int8, [xn]),
                "torch_float": torch_float,
            },
            repeats,
            count,
        )
        rows.append(
            {
                "threads": count,
                "clock": "thread CPU time" if count == 1 else "wall time",
                "packed_ms": times["packed"],
                "ort_float_ms": times["ort_float"],
                "ort_int8_ms": times["ort_int8"],
                "torch_float_ms": times["torch_float"],
                "speedup_vs_ort": times["ort_float"] / times["packed"],
                "speedup_vs_ort_int8": times["ort_int8"] / times["packed"],
                "speedup_vs_torch": times["torch_float"] / times["packed"],
                "load_average": load_average(),
            }
        )
        if packed_int8:
            rows[-1]["packed_int8_stem_ms"] = times["packed_int8_stem"]
            rows[-1]["int8_stem_speedup_vs_ort_int8"] = times["ort_int8"] / times["packed_int8_stem"]
            rows[-1]["int8_stem_speedup_vs_ort"] = times["ort_float"] / times["packed_int8_stem"]
    if len(rows) > 1:
        rows[0]["two_threads_speedup"] = rows[0]["packed_ms"] / rows[1]["packed_ms"]
    set_threads(1)
    steps = breakdown(packed, xn, max(repeats, 10))
    scaling = thread_breakdown(packed, xn, 4 * max(repeats, 10), threads[-1]) if threads[-1] > 1 else None
    int8_steps = breakdown(packed_int8, xn, max(repeats, 10)) if packed_int8 else None
    contended = measure_contended(
        packed, session(int8_path, threads=1), session(int8_path, threads=2), xn, max(repeats, 10)
    )
    ort_binary = session(binary_path, threads=threads[0])
    ort_custom_ms = median_ms(lambda: run_session(ort_binary, [xn]), repeats=3, warmup=1)
    return {
        **rows[0],
        "per_threads": rows,
        "contended": contended,
        "breakdown": steps,
        "thread_breakdown": scaling,
        "breakdown_int8_stem": int8_steps,
        "int8_stem_rel_error": float(np.abs(packed_int8.run([xn])[0] - packed_out).max() / np.abs(packed_out).max())
        if packed_int8
        else None,
        "layers_in_network": in_network_layers(steps, layers),
        "ort_on_binary_file_ms": ort_custom_ms,
        "packed_vs_ort_same_file_rel_error": float(
            np.abs(packed_out - reference_out).max() / np.abs(reference_out).max()
        ),
        "float_file_bytes": float_path.stat().st_size,
        "binary_file_bytes": binary_path.stat().st_size,
        "int8_file_bytes": int8_path.stat().st_size,
        "file_size_ratio": float_path.stat().st_size / binary_path.stat().st_size,
        "packed_weight_bytes": packed.weight_bytes(),
        "packed_activation_bytes": packed.activation_bytes(xn),
        "memory_packed": peak_memory_mb("packed", binary_path, (1, 3, 224, 224)),
        "memory_ort_float": peak_memory_mb("ort", float_path, (1, 3, 224, 224)),
        "compile_report": {key: value for key, value in vars(packed.report).items() if key != "ops"},
    }


def contended_run(repeats: int, workdir: Path) -> dict:
    """The contended measurement on its own models (1 and 2 threads, one core kept busy)."""
    from bitfx.backends.onnx import session

    _, x, _, binary_path, int8_path = build_models(workdir)
    packed = PackedModel(binary_path)
    return measure_contended(packed, session(int8_path, threads=1), session(int8_path, threads=2), x.numpy(), repeats)


def print_breakdown(steps: list[dict], every_step: bool) -> None:
    total = sum(s["ms"] for s in steps)
    kinds: dict[str, list[float]] = {}
    for s in steps:
        kinds.setdefault(s["kind"], []).append(s["ms"])
    print(f"\nwhere the packed run's time goes (1 thread, thread CPU time per step; sum {total:.2f} ms)")
    print(
        format_table(
            ("kind", "steps", "ms", "share"),
            [
                (kind, len(ms), f"{sum(ms):.3f}", f"{100 * sum(ms) / total:.0f}%")
                for kind, ms in sorted(kinds.items(), key=lambda item: -sum(item[1]))
            ],
            (False, True, True, True),
        )
    )
    stem = sum(s["ms"] for s in steps if s["kind"] in STEM_KINDS)
    print(f"stem (float conv and max pool, fused or not): {stem:.3f} ms, {100 * stem / total:.0f}% of the run")
    if every_step:
        print(
            format_table(
                ("step", "kind", "ms"),
                [(s["step"], s["kind"], f"{s['ms']:.3f}") for s in steps],
                (False, False, True),
            )
        )


def print_thread_breakdown(scaling: dict) -> None:
    count = str(scaling["threads"])
    print(
        f"\nthread scaling per step kind (wall time, 1 and {count} threads taking turns; "
        f"load average {scaling['load_average']})"
    )
    rows = [
        (name, kind["steps"], f"{kind['1']:.3f}", f"{kind[count]:.3f}", f"{kind['1'] / kind[count]:.2f}×")
        for name, kind in sorted(scaling["kinds"].items(), key=lambda item: -item[1]["1"])
    ]
    for label, key in (("sum of the steps", "steps_ms"), ("outside the steps (serial)", "outside_ms")):
        rows.append((label, "", f"{scaling[key]['1']:.3f}", f"{scaling[key][count]:.3f}", ""))
    run = scaling["run_ms"]
    rows.append(("whole run", "", f"{run['1']:.3f}", f"{run[count]:.3f}", f"{run['1'] / run[count]:.2f}×"))
    print(
        format_table(
            ("kind", "steps", "1 thread ms", f"{count} threads ms", "speed-up"), rows, (False, True, True, True, True)
        )
    )


def print_int8_stem(end: dict) -> None:
    rows = [r for r in end["per_threads"] if "packed_int8_stem_ms" in r]
    print(f"\nwith the int8 stem (max rel. error of the logits vs the float stem {end['int8_stem_rel_error']:.2e})")
    print(
        format_table(
            ("threads", "clock", "packed int8-stem ms", "vs ort int8", "vs ort"),
            [
                (
                    r["threads"],
                    r["clock"],
                    f"{r['packed_int8_stem_ms']:.2f}",
                    f"{r['int8_stem_speedup_vs_ort_int8']:.2f}×",
                    f"{r['int8_stem_speedup_vs_ort']:.2f}×",
                )
                for r in rows
            ],
            (True, False, True, True, True),
        )
    )


def print_contended(c: dict) -> None:
    print(f"\ncontended (another process keeps one core busy; wall time; load average {c['load_average']})")
    print(
        f"packed: 1 thread {c['packed_1_thread_ms']:.2f} ms, 2 threads {c['packed_2_threads_ms']:.2f} ms "
        f"(2 / 1 = {c['two_thread_over_one_thread']:.2f}); onnxruntime int8: 1 thread "
        f"{c['ort_int8_1_thread_ms']:.2f} ms, 2 threads {c['ort_int8_2_threads_ms']:.2f} ms "
        f"(2 / 1 = {c['ort_int8_two_thread_over_one_thread']:.2f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repeats (under a minute)")
    parser.add_argument("--threads", default=f"1,{cpu_count()}", help="thread counts (default: 1 and all cores)")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--skip-end-to-end", action="store_true", help="only the per-layer measurements")
    parser.add_argument("--breakdown", action="store_true", help="print the time of every end-to-end step")
    parser.add_argument("--contended", action="store_true", help="only the contended measurement")
    parser.add_argument(
        "--int8-stem", action="store_true", help="also time the packed model with its float stem run in int8"
    )
    args = parser.parse_args()
    threads = sorted({int(t) for t in args.threads.split(",")})
    repeats = 15 if args.quick else 100
    if args.contended:
        print(f"load average {load_average()} before the busy process starts")
        with tempfile.TemporaryDirectory() as tmp:
            contended = contended_run(15 if args.quick else 40, Path(tmp))
        print_contended(contended)
        if args.json:
            Path(args.json).write_text(json.dumps({"contended": contended}, indent=2) + "\n")
        return
    best = get_isa()
    isas = [best] + [isa for isa in ("avx2",) if isa in available_isas() and isa != best]
    start_load = load_average()
    print(
        f"CPU: {platform.processor() or platform.machine()}, {cpu_count()} cores; "
        f"ISAs {available_isas()}; load average {start_load}"
    )
    if os.getloadavg()[0] > cpu_count() - 0.5:
        print(
            "WARNING: other processes are using the cores: "
            "multi-thread timings and % of peak are unreliable (run on a quiet machine)"
        )
    print()
    peaks, layers = {}, []
    for isa in isas:
        set_isa(isa)
        for count in threads:
            set_threads(count)
            for pixels, channels in LAYERS:
                # the peak is measured right before each layer, so both see the same machine state
                peak = popcount_peak(0.1 if args.quick else 0.5, trials=10, clock=clock_for(count))
                peaks[(isa, count)] = max(peaks.get((isa, count), 0.0), peak)
                layers.append(measure_layer(pixels, channels, count, isa, peak, repeats))
    set_isa(best)
    for r in layers:  # a conservative share: the best peak of the run (contention lowers the one measured just before)
        r["pct_of_best_peak"] = r["pct_of_peak"] * r["peak_bit_macs_per_s"] / peaks[(r["isa"], r["threads"])]
    print(
        format_table(
            (
                "isa",
                "threads",
                "layer",
                "packed ms",
                "chain ms",
                "torch ms",
                "ort ms",
                "vs torch",
                "vs ort",
                "% of peak",
                "% of best peak",
            ),
            [
                (
                    r["isa"],
                    r["threads"],
                    r["shape"],
                    f"{r['packed_ms']:.3f}",
                    f"{r['chain_ms']:.3f}",
                    f"{r['torch_ms']:.3f}",
                    f"{r['ort_ms']:.3f}",
                    f"{r['speedup_vs_torch']:.1f}×",
                    f"{r['speedup_vs_ort']:.1f}×",
                    f"{r['pct_of_peak']:.0f}%",
                    f"{r['pct_of_best_peak']:.0f}%",
                )
                for r in layers
            ],
            (False, True, False, True, True, True, True, True, True, True, True),
        )
    )
    print(
        "\npopcount peak, best seen (G bit-MAC/s): "
        + ", ".join(f"{isa} {t} thread(s) {p / 1e9:.0f}" for (isa, t), p in peaks.items())
    )
    stem = measure_stem(50 if args.quick else 200) if args.int8_stem else None
    if stem:
        names = ("conv_then_pool", "fused", "fused_int8", "fused_nhwc", "fused_int8_nhwc")
        print(
            "\nResNet-18 stem alone (7×7/2 conv + Relu, 3×3/2 max pool; 1 thread; "
            f"load average {stem[-1]['load_average']})"
        )
        print(
            format_table(
                ("isa", "conv, then pool ms", "fused ms", "fused int8 ms", "fused NHWC ms", "fused int8 NHWC ms"),
                [(r["isa"], *(f"{r[name + '_ms']:.3f}" for name in names)) for r in stem],
                (False, True, True, True, True, True),
            )
        )
    result = {
        "stem": stem,
        "load_average_start": start_load,
        "cpu_count": cpu_count(),
        "isas": available_isas(),
        "popcount_peak": [{"isa": isa, "threads": t, "bit_macs_per_s": p} for (isa, t), p in peaks.items()],
        "layers": layers,
    }
    if not args.skip_end_to_end:
        with tempfile.TemporaryDirectory() as tmp:
            end = measure_end_to_end(threads, 5 if args.quick else 30, Path(tmp), layers, args.int8_stem)
        result["end_to_end"] = end
        result["contended"] = end.get("contended")
        if "skipped" in end:
            print(f"\nend to end skipped: {end['skipped']}")
        else:
            print("\nResNet-18, batch 1, 224×224 (binary: every conv but the first, fc float)")
            print(
                format_table(
                    (
                        "threads",
                        "clock",
                        "packed ms",
                        "ort int8 ms",
                        "ort float ms",
                        "torch float ms",
                        "vs ort int8",
                        "vs ort",
                        "vs torch",
                    ),
                    [
                        (
                            r["threads"],
                            r["clock"],
                            f"{r['packed_ms']:.2f}",
                            f"{r['ort_int8_ms']:.2f}",
                            f"{r['ort_float_ms']:.2f}",
                            f"{r['torch_float_ms']:.2f}",
                            f"{r['speedup_vs_ort_int8']:.2f}×",
                            f"{r['speedup_vs_ort']:.2f}×",
                            f"{r['speedup_vs_torch']:.2f}×",
                        )
                        for r in end["per_threads"]
                    ],
                    (True, False, True, True, True, True, True, True, True),
                )
            )
            if args.int8_stem:
                print_int8_stem(end)
            print_breakdown(end["breakdown"], every_step=args.breakdown)
            if end["thread_breakdown"]:
                print_thread_breakdown(end["thread_breakdown"])
            if end["breakdown_int8_stem"]:
                print("\nwith the int8 stem (load(..., int8_float_convs=calibration images)):", end="")
                print_breakdown(end["breakdown_int8_stem"], every_step=False)
            print("\nResNet-18 3×3 layers in the network vs alone (1 thread, thread CPU time)")
            print(
                format_table(
                    ("layer", "output", "layers", "in network ms", "alone ms", "network / alone", "% of peak"),
                    [
                        (
                            r["shape"],
                            r["output"],
                            r["count"],
                            f"{r['in_network_ms']:.3f}",
                            f"{r['isolated_ms']:.3f}",
                            f"{r['in_network_over_isolated']:.2f}",
                            f"{r['in_network_pct_of_peak']:.0f}%",
                        )
                        for r in end["layers_in_network"]
                    ],
                    (False, False, True, True, True, True, True),
                )
            )
            print_contended(end["contended"])
            mem_p, mem_o = end["memory_packed"], end["memory_ort_float"]
            print(
                f"file: float {end['float_file_bytes'] / 1e6:.1f} MB, "
                f"binary {end['binary_file_bytes'] / 1e6:.1f} MB ({end['file_size_ratio']:.1f}× smaller)"
            )
            print(
                f"peak RSS (load + 5 runs, 1 thread): "
                f"packed {mem_p['peak_rss_mb']:.0f} MB ({mem_p['model_rss_mb']:.0f} MB after imports), "
                f"onnxruntime float {mem_o['peak_rss_mb']:.0f} MB ({mem_o['model_rss_mb']:.0f} MB after imports)"
            )
            print(
                f"stock onnxruntime on the binary file (function bodies): {end['ort_on_binary_file_ms']:.1f} ms; "
                f"packed vs onnxruntime on that file: max rel. error {end['packed_vs_ort_same_file_rel_error']:.1e}"
            )
    result["load_average_end"] = load_average()
    print(f"\nload average: {start_load} at start, {result['load_average_end']} at end")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
