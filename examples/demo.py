"""From a trained float model to a 1-bit file on a device, on real data, in one run.

On scikit-learn's bundled handwritten digits (no download) it trains the zoo's ResNet-20 in
float, binarizes it (`binarize`, xnor), fine-tunes the binary network with distillation from
the float one, runs `fuse_bn` on it, lowers it (`custom` style) and runs that file in bitfx's
packed runtime. Next to it: the float model in onnxruntime, and onnxruntime's own int8
(`quantize_static`, U8S8) of the same float model. It prints one table (accuracy, batch-1
latency at one thread, file size, peak memory), and writes an SVG of the rewritten graph with
the 1-bit layers marked, a plot of accuracy against latency and a JSON report.

    python -m examples.demo [--epochs 5] [--binary-epochs 5] [--out build/demo]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quant_pre_process, quantize_static

from bitfx.backends.onnx import export, run_session, session
from bitfx.backends.packed import PackedModel, get_isa
from bitfx.ir import capture, summary, write_graph_picture
from bitfx.ir.table import format_table
from bitfx.passes import Pipeline
from bitfx.train import Distillation
from bitfx.zoo import digits, resnet20
from examples.memory import peak_memory_mb
from examples.timing import median_cpu_ms
from examples.training import accuracy, train_classifier, train_epochs

HEADERS = ("variant", "runtime", "accuracy", "latency ms (1 thread)", "file KB", "peak RSS MB (model)")
NEXT_STEPS = """Where to go next:
  docs/tutorial.md          your own model, from capture to the device
  docs/binarization.md      binary schemes, training recipes, what each costs
  docs/packed-runtime.md    the kernels, and installing only the runtime on a device (bitfx-runtime)
  bitfx compile --help      the same pipeline from the command line
  python -m examples.binarize_digits   every binarization scheme side by side"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5, help="epochs of float training")
    parser.add_argument("--binary-epochs", type=int, default=5, help="epochs of fine-tuning the binary network")
    parser.add_argument("--size", type=int, default=16, help="image side (the digits are 8×8, resized)")
    parser.add_argument("--repeats", type=int, default=200, help="timed batch-1 runs per variant")
    parser.add_argument("--out", default="build/demo", help="directory for the files, pictures and report")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    torch.manual_seed(0)

    shape = (1, 3, args.size, args.size)
    train, test = digits(shape, split="train"), digits(shape, split="test")
    example = test[0][0][:8]
    print(f"1. training ResNet-20 in float on the digits ({args.size}×{args.size}, {args.epochs} epochs)")
    teacher = capture(train_classifier(resnet20(), train, epochs=args.epochs), (example,))

    print(f"2. binarize (xnor) and fine-tune with distillation from the float model ({args.binary_epochs} epochs)")
    student = Pipeline.from_spec("binarize(scheme=xnor)").run(teacher).graph_module
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-3)
    train_epochs(student, train, Distillation(teacher, student), optimizer, epochs=args.binary_epochs)

    print("3. fold the BatchNorms (fuse_bn)")
    float_result = Pipeline.from_spec("fuse_bn").run(teacher)
    binary_result = Pipeline.from_spec("fuse_bn").run(student)
    print("   " + fold_note(binary_result.records[0].stats))
    deployed = binary_result.graph_module
    write_graph_picture(deployed, out / "binary_graph")
    print(_mac_line(deployed))

    print("4. lower and run: packed runtime, onnxruntime float, onnxruntime int8")
    paths = {
        "float": export(float_result.graph_module, (example,), out / "float.onnx"),
        "binary": export(deployed, (example,), out / "binary_custom.onnx", lowering="custom"),
    }
    paths["int8"] = quantize_u8s8(paths["float"], out / "int8_u8s8.onnx", train[:8])  # 512 calibration images
    x1 = test[0][0][:1].numpy()
    calibration = torch.cat([images for images, _ in train[:8]]).numpy()  # the int8 stem's input range
    rows = [
        measure("float (fuse_bn)", "onnxruntime", paths["float"], test, x1, args.repeats),
        measure("int8 U8S8 quantize_static", "onnxruntime", paths["int8"], test, x1, args.repeats),
        measure("1-bit xnor, fine-tuned", "bitfx packed", paths["binary"], test, x1, args.repeats),
        measure("1-bit xnor + int8 stem", "bitfx packed", paths["binary"], test, x1, args.repeats, calibration),
    ]
    print()
    print(results_table(rows))
    print(
        f"latency: median thread CPU time of {args.repeats} batch-1 runs, each runtime set to 1 thread "
        f"(packed kernels: {get_isa()}); peak RSS of a fresh process running the file, (model) = its growth "
        f"after imports; {sum(len(labels) for _, labels in test)} test images; "
        f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}"
    )
    plot_path = plot_accuracy_latency(rows, out / "accuracy_latency.png")
    report = {"args": vars(args), "fold": binary_result.records[0].stats, "results": rows}
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    written = ["binary_graph.svg", "report.json", *(p.name for p in paths.values())]
    if plot_path is not None:
        written.insert(1, plot_path.name)
    print(f"\nwrote {', '.join(written)} in {out}/ ({time.perf_counter() - started:.0f} s)")
    if plot_path is None:
        print("(no plot: matplotlib is not installed; `pip install 'bitfx[examples]'` adds it)")
    print("\n" + NEXT_STEPS)


def fold_note(stats: dict) -> str:
    """What `fuse_bn` did with the BatchNorms of the binary network, in words."""
    skipped = stats.get("skipped", {})
    note = f"fuse_bn folded {stats.get('fused', 0)} BatchNorms"
    if not skipped:
        return note + " and left none"
    reasons = Counter(skipped.values())
    return note + f" and left {len(skipped)}: " + "; ".join(f"{count}× {why}" for why, count in reasons.most_common())


def _mac_line(gm: torch.fx.GraphModule) -> str:
    totals = summary(gm).totals()
    return f"   rewritten graph: {totals['float_macs']:,} float MACs, {totals['binary_macs']:,} binary MACs per image"


class _Calibration(CalibrationDataReader):
    """Feeds onnxruntime's calibrator training batches."""

    def __init__(self, name: str, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.items = iter([{name: images.numpy()} for images, _ in batches])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.items, None)


def quantize_u8s8(float_path: Path, path: Path, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> Path:
    """onnxruntime's static int8 quantization of the float file: uint8 activations, int8 weights (QDQ),
    after its recommended pre-processing (shape inference and graph clean-up)."""
    name = session(float_path).get_inputs()[0].name
    prepared = path.with_name(path.stem + "_preprocessed.onnx")
    quant_pre_process(float_path, prepared)
    quantize_static(
        prepared,
        path,
        _Calibration(name, batches),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    return path


def measure(
    variant: str,
    runtime: str,
    path: Path,
    test: list[tuple[torch.Tensor, torch.Tensor]],
    x1: np.ndarray,
    repeats: int,
    int8_calibration: np.ndarray | None = None,
) -> dict:
    """Accuracy on the test batches, batch-1 latency at one thread, file size and peak memory of one file
    (the packed runtime runs its first float conv in int8 when given `int8_calibration`)."""
    run: Callable[[np.ndarray], np.ndarray]
    if runtime == "bitfx packed":
        model = PackedModel(path, threads=1, int8_float_convs=int8_calibration)
        run = lambda x: model.run([x])[0]  # noqa: E731
        kind = "packed"
    else:
        ort_session = session(path, threads=1)
        run = lambda x: run_session(ort_session, [x])[0]  # noqa: E731
        kind = "ort"
    return {
        "variant": variant,
        "runtime": runtime,
        "file": path.name,
        "accuracy": accuracy(lambda images: run(images.numpy()), test),
        "latency_ms": median_cpu_ms(lambda: run(x1), repeats=repeats),
        "threads": 1,
        "file_bytes": path.stat().st_size,
        **peak_memory_mb(kind, path, x1.shape),
    }


def results_table(rows: list[dict]) -> str:
    """The demo's table: one row per variant, as `measure` returns them."""
    body = [
        (
            row["variant"],
            row["runtime"],
            f"{row['accuracy']:.1%}",
            f"{row['latency_ms']:.3f}",
            f"{row['file_bytes'] / 1024:.0f}",
            f"{row['peak_rss_mb']:.0f} ({row['model_rss_mb']:+.1f})",
        )
        for row in rows
    ]
    return format_table(HEADERS, body, (False, False, True, True, True, True))


def plot_accuracy_latency(rows: list[dict], path: Path) -> Path | None:
    """Accuracy against batch-1 latency, one point per variant; None when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt
    except ImportError:
        return None
    figure, axes = plt.subplots(figsize=(6, 4))
    for row in rows:
        axes.scatter(row["latency_ms"], 100 * row["accuracy"], s=40)
        axes.annotate(f"{row['variant']}\n({row['runtime']})", (row["latency_ms"], 100 * row["accuracy"]), fontsize=8)
    axes.set_xlabel("batch-1 latency, ms of CPU time at 1 thread")
    axes.set_ylabel("test accuracy, %")
    axes.set_title("ResNet-20 on the bundled digits")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


if __name__ == "__main__":
    main()
