"""PAMS on ×2 super-resolution with real photographs: float vs 8-bit vs 4-bit PSNR.

1. `edsr_lite(scale=2)` is trained (L1, Adam) on random patches of the RGB photographs
   bundled inside scikit-image (bitfx.zoo.sr_data; nothing is downloaded);
2. the `pams` pass quantizes a copy, α calibrated on training patches, with the paper's
   EDSR placement (the 3×3 convs of the residual blocks; head, body's last conv, upsampler
   and tail float; the pass's default) and with `placement=general` (every conv but the first and the last);
3. each student starts from the float weights and is fine-tuned with
   L1(SR, HR) + 1000 · SKT(body output before the tail) against the float teacher, α in its
   own Adam group (lr 1e-2, no weight decay); PSNR is also measured before fine-tuning;
4. PSNR (luma, 2-pixel border shaved) on held-out photographs: bicubic, float, each student
   in torch, and the same student lowered to integer ONNX (`qdq`) and run by onnxruntime.

    python -m examples.pams_sr [--quick] [--threads N] [--out build/pams_sr]

Writes `edsr_float.pt` (used by benchmarks/pams.py), `pams_sr.json` and prints the table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn
from tqdm import tqdm

from bitfx.backends.onnx import export, quantized_layer_fusion, run_session, session
from bitfx.ir import capture
from bitfx.ir.table import format_table
from bitfx.passes import PAMSQuantize, Pipeline
from bitfx.train import DEFAULT_SKT_WEIGHT, pams_parameter_groups, skt_loss, with_taps
from bitfx.zoo import edsr_lite
from bitfx.zoo.sr_data import TEST_IMAGES, TRAIN_IMAGES, SRPair, load_pairs, psnr_y, random_patches

SCALE = 2
PATCH = 32
BATCH = 16
PLACEMENTS = ("paper", "general")  # the `pams` pass's placements: EDSR's block convs; every conv but the ends


def train_float(model: nn.Module, pairs: list[SRPair], steps: int, seed: int) -> nn.Module:
    """L1 training with Adam (lr 1e-3, cosine to 0) on random augmented patches."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    model.train()
    for _ in tqdm(range(steps), desc="float training", unit="step", leave=False):
        low, high = random_patches(pairs, BATCH, PATCH, SCALE, generator)
        optimizer.zero_grad()
        F.l1_loss(model(low), high).backward()
        optimizer.step()
        schedule.step()
    return model.eval()


def tail_input(gm: fx.GraphModule) -> str:
    """The node the tail reads: the body output plus the global skip (PAMS's SKT feature)."""
    return next(n for n in gm.graph.nodes if n.op == "call_module" and n.target == "tail.0.0").args[0].name


def quantize(teacher: fx.GraphModule, bits: int, placement: str, pairs: list[SRPair], seed: int) -> fx.GraphModule:
    """The `pams` pass on a copy of the teacher, α calibrated on four batches of training patches."""
    generator = torch.Generator().manual_seed(seed)
    calibration = [random_patches(pairs, BATCH, PATCH, SCALE, generator)[0] for _ in range(4)]
    return Pipeline([PAMSQuantize(bits=bits, placement=placement)]).run(teacher, data=calibration).graph_module


def finetune(
    teacher: fx.GraphModule, student: fx.GraphModule, pairs: list[SRPair], steps: int, seed: int
) -> fx.GraphModule:
    """L1(SR, HR) + 1000·SKT(tail input) against the float teacher; Adam, weights lr 1e-4, α lr 1e-2."""
    generator = torch.Generator().manual_seed(seed)
    feature = tail_input(teacher)
    tapped_teacher, tapped_student = with_taps(teacher, [feature]), with_taps(student, [feature])
    optimizer = torch.optim.Adam(pams_parameter_groups(student, lr=1e-4))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(steps, 1))
    student.train()
    for _ in tqdm(range(steps), desc="PAMS fine-tuning", unit="step", leave=False):
        low, high = random_patches(pairs, BATCH, PATCH, SCALE, generator)
        with torch.no_grad():
            _, target = tapped_teacher(low)
        output, features = tapped_student(low)
        loss = F.l1_loss(output, high) + DEFAULT_SKT_WEIGHT * skt_loss(features, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return student.eval()


def torch_psnr(model: nn.Module, pairs: list[SRPair]) -> list[float]:
    with torch.no_grad():
        return [psnr_y(model(p.lr.unsqueeze(0))[0], p.hr, SCALE) for p in pairs]


def bicubic_psnr(pairs: list[SRPair]) -> list[float]:
    upscaled = [
        F.interpolate(p.lr.unsqueeze(0), scale_factor=SCALE, mode="bicubic", align_corners=False)[0] for p in pairs
    ]
    return [psnr_y(image, p.hr, SCALE) for image, p in zip(upscaled, pairs)]


def onnx_psnr(
    student: fx.GraphModule, pairs: list[SRPair], workdir: Path, tag: str
) -> tuple[list[float], dict[str, Any]]:
    """PSNR of the student lowered to `qdq` and run by onnxruntime (one file per image size)."""
    scores, fusion = [], {}
    for pair in pairs:
        x = pair.lr.unsqueeze(0)
        path = export(student, x, workdir / f"{tag}_{pair.name}.onnx", lowering="qdq")
        fusion = quantized_layer_fusion(path)
        output = torch.from_numpy(run_session(session(path), [x.numpy()])[0])
        scores.append(psnr_y(output[0], pair.hr, SCALE))
    return scores, fusion


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="few training steps (about two minutes); numbers are not meaningful"
    )
    parser.add_argument(
        "--threads", type=int, default=torch.get_num_threads(), help="torch threads (1 is faster on a busy machine)"
    )
    parser.add_argument("--out", default="build/pams_sr", help="directory for the checkpoint, ONNX files and JSON")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    float_steps, finetune_steps = (150, {8: 20, 4: 40}) if args.quick else (1200, {8: 100, 4: 250})
    start = time.perf_counter()

    train, test = load_pairs(TRAIN_IMAGES, SCALE), load_pairs(TEST_IMAGES, SCALE)
    model = train_float(edsr_lite(scale=SCALE), train, float_steps, args.seed)
    torch.save(model.state_dict(), out / "edsr_float.pt")
    teacher = capture(model, test[0].lr.unsqueeze(0))

    rows = [
        {"model": "bicubic", "bits": "", "placement": "", "torch": bicubic_psnr(test)},
        {"model": "float", "bits": 32, "placement": "", "torch": torch_psnr(teacher, test)},
    ]
    for placement in PLACEMENTS:
        for bits in (8, 4):
            student = quantize(teacher, bits, placement, train, args.seed + bits)
            calibrated = torch_psnr(student, test)
            student = finetune(teacher, student, train, finetune_steps[bits], args.seed + bits)
            onnx_scores, fusion = onnx_psnr(student, test, out, f"pams{bits}_{placement}")
            row = {
                "model": "PAMS",
                "bits": bits,
                "placement": placement,
                "calibrated": calibrated,
                "torch": torch_psnr(student, test),
            }
            rows.append({**row, "onnx": onnx_scores, "fusion": fusion})

    reference = sum(rows[1]["torch"]) / len(test)
    table = []
    for row in rows:
        mean = sum(row["torch"]) / len(test)
        onnx_mean = sum(row["onnx"]) / len(test) if "onnx" in row else None
        calibrated = f"{sum(row['calibrated']) / len(test):.3f}" if "calibrated" in row else ""
        fused = f"{row['fusion']['fused_convs']}/{row['fusion']['quantized_convs']}" if "fusion" in row else ""
        table.append(
            (
                row["model"],
                row["bits"],
                row["placement"],
                *(f"{s:.3f}" for s in row["torch"]),
                f"{mean:.3f}",
                "" if row["model"] == "float" else f"{mean - reference:+.3f}",
                calibrated,
                "" if onnx_mean is None else f"{onnx_mean:.3f}",
                fused,
            )
        )
    headers = (
        "model",
        "bits",
        "placement",
        *(f"{p.name} dB" for p in test),
        "mean dB",
        "Δ vs float",
        "calibrated only dB",
        "onnxruntime dB",
        "fused convs",
    )
    print(format_table(headers, table, (False, True, False, *([True] * (len(test) + 4)), False)))
    seconds = time.perf_counter() - start
    print(
        f"\n{'quick run: ' if args.quick else ''}{float_steps} float steps, fine-tuning {finetune_steps} steps, "
        f"{seconds:.0f} s with {args.threads} thread(s)"
    )
    summary = {
        "scale": SCALE,
        "train_images": TRAIN_IMAGES,
        "test_images": TEST_IMAGES,
        "float_steps": float_steps,
        "finetune_steps": finetune_steps,
        "seconds": seconds,
        "rows": rows,
    }
    (out / "pams_sr.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
