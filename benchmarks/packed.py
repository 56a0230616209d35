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
End to end: ResNet-18 (first conv and fc float, every other conv binary; fuse_bn,binarize →
custom lowering) in the packed executor vs the float ResNet-18 in onnxruntime and torch;
model file sizes; peak memory of a process that loads and runs each model.

    python benchmarks/packed.py [--quick] [--json PATH] [--threads 1,2] [--skip-end-to-end]

The machine's load average is recorded next to the numbers: on a shared machine other
processes steal cycles; ratios measured within one run are the trustworthy figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from common import median_ms
from onnx import TensorProto, helper, numpy_helper

from bitfx.backends.packed import PackedModel, available_isas, cpu_count, get_isa, popcount_peak, set_isa, set_threads
from bitfx.backends.packed import kernels as k
from bitfx.backends.packed import reference as ref
from bitfx.ir.table import format_table
from examples.memory import peak_memory_mb

LAYERS = [(56, 64), (28, 128), (14, 256), (7, 512)]  # (pixels, channels) of ResNet-18's 3×3 binary convs


def load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


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

    packed_ms = median_ms(packed_layer, repeats=repeats)
    chain_ms = median_ms(run_chain, repeats=repeats)
    torch.set_num_threads(threads)
    tx, tw = torch.from_numpy(x), torch.from_numpy(weight)
    with torch.no_grad():
        torch_ms = median_ms(lambda: torch.nn.functional.conv2d(tx, tw, padding=1), repeats=repeats)
    sess = ort_conv_session(channels, weight, threads)
    ort_ms = median_ms(lambda: sess.run(None, {"x": x}), repeats=repeats)
    bit_macs = pixels * pixels * channels * channels * 9
    return {
        "shape": f"{channels}x{pixels}x{pixels} 3x3",
        "pixels": pixels,
        "channels": channels,
        "threads": threads,
        "isa": isa,
        "packed_ms": packed_ms,
        "chain_ms": chain_ms,
        "torch_ms": torch_ms,
        "ort_ms": ort_ms,
        "speedup_vs_torch": torch_ms / packed_ms,
        "speedup_vs_ort": ort_ms / packed_ms,
        "chain_speedup_vs_torch": torch_ms / chain_ms,
        "pct_of_peak": 100 * bit_macs / (packed_ms * 1e-3) / peak,
        "chain_pct_of_peak": 100 * bit_macs / (chain_ms * 1e-3) / peak,
        "peak_bit_macs_per_s": peak,
    }


def measure_end_to_end(threads: list[int], repeats: int, workdir: Path) -> dict:
    from bitfx.backends.onnx import available_lowerings, export, run_session, session
    from bitfx.ir import capture
    from bitfx.passes import Pipeline
    from bitfx.zoo import resnet18

    if "custom" not in available_lowerings():
        return {"skipped": "the custom lowering is not available"}
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
    packed = PackedModel(binary_path)
    xn = x.numpy()
    reference_out = run_session(session(binary_path), [xn])[0]
    packed_out = packed.run([xn])[0]
    rows = []
    for count in threads:
        torch.set_num_threads(count)
        set_threads(count)
        ort_float = session(float_path, threads=count)
        with torch.no_grad():
            torch_ms = median_ms(lambda: model(x), repeats=repeats)
        ort_ms = median_ms(lambda: run_session(ort_float, [xn]), repeats=repeats)
        packed_ms = median_ms(lambda: packed.run([xn]), repeats=repeats)
        rows.append(
            {
                "threads": count,
                "packed_ms": packed_ms,
                "ort_float_ms": ort_ms,
                "torch_float_ms": torch_ms,
                "speedup_vs_ort": ort_ms / packed_ms,
                "speedup_vs_torch": torch_ms / packed_ms,
                "load_average": load_average(),
            }
        )
    ort_binary = session(binary_path, threads=threads[0])
    ort_custom_ms = median_ms(lambda: run_session(ort_binary, [xn]), repeats=3, warmup=1)
    return {
        **rows[0],
        "per_threads": rows,
        "ort_on_binary_file_ms": ort_custom_ms,
        "packed_vs_ort_same_file_rel_error": float(
            np.abs(packed_out - reference_out).max() / np.abs(reference_out).max()
        ),
        "float_file_bytes": float_path.stat().st_size,
        "binary_file_bytes": binary_path.stat().st_size,
        "file_size_ratio": float_path.stat().st_size / binary_path.stat().st_size,
        "packed_weight_bytes": packed.weight_bytes(),
        "packed_activation_bytes": packed.activation_bytes(xn),
        "memory_packed": peak_memory_mb("packed", binary_path, tuple(x.shape)),
        "memory_ort_float": peak_memory_mb("ort", float_path, tuple(x.shape)),
        "compile_report": {key: value for key, value in vars(packed.report).items() if key != "ops"},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repeats (under a minute)")
    parser.add_argument("--threads", default=f"1,{cpu_count()}", help="thread counts (default: 1 and all cores)")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--skip-end-to-end", action="store_true", help="only the per-layer measurements")
    args = parser.parse_args()
    threads = sorted({int(t) for t in args.threads.split(",")})
    repeats = 15 if args.quick else 100
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
                peak = popcount_peak(0.1 if args.quick else 0.5, trials=10)
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
    result = {
        "load_average_start": start_load,
        "cpu_count": cpu_count(),
        "isas": available_isas(),
        "popcount_peak": [{"isa": isa, "threads": t, "bit_macs_per_s": p} for (isa, t), p in peaks.items()],
        "layers": layers,
    }
    if not args.skip_end_to_end:
        with tempfile.TemporaryDirectory() as tmp:
            end = measure_end_to_end(threads, 5 if args.quick else 30, Path(tmp))
        result["end_to_end"] = end
        if "skipped" in end:
            print(f"\nend to end skipped: {end['skipped']}")
        else:
            print("\nResNet-18, batch 1, 224×224 (binary: every conv but the first, fc float)")
            print(
                format_table(
                    ("threads", "packed ms", "ort float ms", "torch float ms", "vs ort", "vs torch"),
                    [
                        (
                            r["threads"],
                            f"{r['packed_ms']:.2f}",
                            f"{r['ort_float_ms']:.2f}",
                            f"{r['torch_float_ms']:.2f}",
                            f"{r['speedup_vs_ort']:.2f}×",
                            f"{r['speedup_vs_torch']:.2f}×",
                        )
                        for r in end["per_threads"]
                    ],
                    (True, True, True, True, True, True),
                )
            )
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
