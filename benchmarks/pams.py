"""bitfx PAMS 8-bit (`qdq` lowering) vs onnxruntime's `quantize_static`, same float model, one run.

The float model is `edsr_lite` ×2 trained on scikit-image's bundled photographs (the
checkpoint written by `python -m examples.pams_sr`, or a short training run here). Both
quantizers calibrate on the same LR crops of the training photographs and neither trains
(post-training quantization on both sides; the fine-tuned PAMS numbers are in docs/pams.md):

- bitfx: the `pams` pass (8-bit, per-tensor weights, α = mean per-sample max) with the
  paper's EDSR placement (block convs, the pass's default), `placement=general` (all convs but
  the first and the last) and every conv module (`float_ends=false`; the mean shifts are functional convs on
  buffers and stay float), lowered with `qdq`;
- onnxruntime: `quantize_static(QDQ, per_channel=True, MinMax)` on the float ONNX file (after
  its `quant_pre_process`), with its default int8 activations (S8S8) and with uint8 (U8S8).

For each: PSNR (luma, border 2) on fixed-size LR crops of the held-out photographs, run in
onnxruntime; how many convs the file quantizes and how many onnxruntime fuses into
QLinearConv; batch-1 latency at each thread count and its ratio to the float file.

    python benchmarks/pams.py [--checkpoint build/pams_sr/edsr_float.pt] [--threads 1,2] [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from common import median_ms, ort_quantize_static, timed
from onnxruntime.quantization import QuantType, quant_pre_process

from bitfx.backends.onnx import export, load_model, op_counts, quantized_layer_fusion, run_session, session
from bitfx.ir import capture
from bitfx.ir.table import format_table
from bitfx.passes import PAMSQuantize, Pipeline
from bitfx.zoo import edsr_lite
from bitfx.zoo.sr_data import TEST_IMAGES, TRAIN_IMAGES, load_pairs, psnr_y, random_patches
from examples.pams_sr import SCALE, train_float

CROP = 96  # LR crop side: the benchmark input is 1 × 3 × 96 × 96, the output 1 × 3 × 192 × 192
BITFX_VARIANTS = {
    "paper placement": PAMSQuantize(bits=8),
    "general placement": PAMSQuantize(bits=8, placement="general"),
    "every conv module": PAMSQuantize(bits=8, float_ends=False, placement="general"),
}


def center_crops(size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The central LR crop of every held-out photograph and the matching HR crop."""
    crops = []
    for pair in load_pairs(TEST_IMAGES, SCALE):
        top, left = (pair.lr.shape[1] - size) // 2, (pair.lr.shape[2] - size) // 2
        low = pair.lr[:, top : top + size, left : left + size].unsqueeze(0)
        high = pair.hr[:, top * SCALE : (top + size) * SCALE, left * SCALE : (left + size) * SCALE]
        crops.append((low, high))
    return crops


def float_model(checkpoint: Path, steps: int) -> torch.nn.Module:
    model = edsr_lite(scale=SCALE)
    if checkpoint.is_file():
        model.load_state_dict(torch.load(checkpoint))
        return model.eval()
    print(f"{checkpoint} not found: training the float model for {steps} steps (run examples.pams_sr for the full one)")
    return train_float(model, load_pairs(TRAIN_IMAGES, SCALE), steps, seed=0)


def accuracy(path: Path, crops: list) -> dict:
    """Mean PSNR of the file on the crops, and its quantized-layer fusion counts."""
    psnr = [
        psnr_y(torch.from_numpy(run_session(session(path), [low.numpy()])[0])[0], high, SCALE) for low, high in crops
    ]
    return {"psnr": float(np.mean(psnr)), **quantized_layer_fusion(path)}


def latencies(paths: dict[str, Path], x: np.ndarray, threads: int, repeats: int) -> dict[str, float]:
    """Median batch-1 latency (ms) of every file, timed round-robin so that load changes on
    a shared machine hit every file alike."""
    sessions = {name: session(path, threads=threads) for name, path in paths.items()}
    for sess in sessions.values():
        median_ms(lambda: run_session(sess, [x]), repeats=3)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(repeats):
        for name, sess in sessions.items():
            times[name].append(timed(lambda: run_session(sess, [x]))[1] * 1000)
    return {name: float(np.median(values)) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="build/pams_sr/edsr_float.pt")
    parser.add_argument("--train-steps", type=int, default=600, help="float training steps when there is no checkpoint")
    parser.add_argument("--threads", default=f"1,{torch.get_num_threads()}", help="onnxruntime thread counts")
    parser.add_argument("--quick", action="store_true", help="fewer latency repeats")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    threads = sorted({int(t) for t in args.threads.split(",")})
    repeats = 10 if args.quick else 60
    load_before = os.getloadavg()

    model = float_model(Path(args.checkpoint), args.train_steps)
    crops = center_crops(CROP)
    generator = torch.Generator().manual_seed(0)
    calibration = [random_patches(load_pairs(TRAIN_IMAGES, SCALE), 1, CROP, SCALE, generator)[0] for _ in range(8)]
    gm = capture(model, crops[0][0])
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        paths = {"float": export(gm, crops[0][0], work / "float.onnx")}
        float_path = paths["float"]
        convs = op_counts(load_model(float_path)).get("Conv", 0)
        for label, quantizer in BITFX_VARIANTS.items():
            student = Pipeline([quantizer]).run(gm, data=calibration).graph_module
            paths[f"bitfx PAMS 8-bit, {label}"] = export(
                student, crops[0][0], work / f"pams_{len(paths)}.onnx", lowering="qdq"
            )
        input_name = session(float_path).get_inputs()[0].name
        prepared = work / "float_preprocessed.onnx"
        quant_pre_process(float_path, prepared)  # shape inference and graph clean-up, as onnxruntime recommends
        for label, activations in (("S8S8", QuantType.QInt8), ("U8S8", QuantType.QUInt8)):
            path = work / f"ort_{label}.onnx"
            # the same crops bitfx calibrates on
            ort_quantize_static(prepared, path, input_name, [crop.numpy() for crop in calibration], activations)
            paths[f"onnxruntime quantize_static {label}"] = path
        results = {name: accuracy(path, crops) for name, path in paths.items()}
        for count in threads:
            for name, value in latencies(paths, crops[0][0].numpy(), count, repeats).items():
                results[name].setdefault("latency_ms", {})[count] = value
    load_after = os.getloadavg()

    reference = results["float"]
    rows = []
    for name, r in results.items():
        speed = [f"{r['latency_ms'][t]:.2f} ({reference['latency_ms'][t] / r['latency_ms'][t]:.2f}×)" for t in threads]
        rows.append(
            (
                name,
                f"{r['psnr']:.3f}",
                f"{r['psnr'] - reference['psnr']:+.3f}",
                f"{r['fused_convs']}/{r['quantized_convs']}",
                *speed,
            )
        )
    headers = (
        "model",
        "PSNR dB",
        "Δ vs float",
        f"fused/quantized convs (of {convs})",
        *(f"ms @{t} thr (speed-up)" for t in threads),
    )
    print(
        f"edsr_lite ×2, input 1×3×{CROP}×{CROP}, PSNR on {len(crops)} held-out crops; "
        f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after\n"
    )
    print(format_table(headers, rows, (False, True, True, True, *([True] * len(threads)))))
    if args.json:
        Path(args.json).write_text(
            json.dumps({"crop": CROP, "load_average": [load_before, load_after], "results": results}, indent=2) + "\n"
        )


if __name__ == "__main__":
    main()
