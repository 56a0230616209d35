"""Tiny-object detection: a compressed anchor-free detector judged by TinyPerson-style AP and miss rate.

On `bitfx.zoo.tiny_objects` (bundled digits pasted at 4–20 px onto crops of bundled photographs;
the placement is synthetic) it trains `bitfx.zoo.tiny_detector` in float, then makes each variant
from those weights and fine-tunes it with the same budget (the same steps, batches and seed; the
float variant is fine-tuned too):

    float          no pass
    float + iff    iff (zero init, leaky ReLU): the head's outputs fed back, the same head run twice
    binary         binarize (xnor; first conv and both output convs float)
    binary + iff   binarize, then iff: the binarized head is what runs twice
    pruned         rank_prune (HRank, rate 0.5)

Each variant is folded (`fuse_bn`), lowered (`float` style, or `custom` for the binary ones) and
run in onnxruntime and in bitfx's packed runtime. Reported per variant, mean ± std over seeds:
tiny AP at IoU 0.5 and 0.25 and the tiny miss rate at IoU 0.5 (`bitfx.eval.detection`, computed on
onnxruntime's outputs of the test images), and batch-1 latency of both runtimes (median thread CPU
time, one thread, all files timed in interleaved rounds).

    python -m examples.tiny_detection [--quick] [--seeds 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, fx
from tqdm import tqdm

from bitfx.backends.onnx import export, run_session, session
from bitfx.backends.packed import PackedModel
from bitfx.eval import Detections, GroundTruth, average_precision, miss_rate
from bitfx.ir import capture
from bitfx.ir.table import format_table
from bitfx.passes import Pipeline
from bitfx.zoo import tiny_detector, tiny_objects
from bitfx.zoo.detection_data import PastedObjects
from bitfx.zoo.tiny_detector import decode, iff_spec, loss, targets
from examples.timing import interleaved_median_ms
from examples.training import train_epochs

BINARIZE = "binarize(scheme=xnor, layers={'by_name': {'cls': False}})"
VARIANTS = ("float", "float + iff", "binary", "binary + iff", "pruned")
METRICS = ("AP50_tiny", "AP25_tiny", "MR50_tiny")
FLOAT_LR, FINETUNE_LR = 3e-3, 1e-3


@dataclass(frozen=True)
class Budget:
    """How much data and training every seed gets."""

    train_images: int
    test_images: int
    float_epochs: int
    finetune_epochs: int
    repeats: int
    size: int = 64


FULL = Budget(train_images=1024, test_images=256, float_epochs=30, finetune_epochs=10, repeats=200)
QUICK = Budget(train_images=256, test_images=128, float_epochs=12, finetune_epochs=4, repeats=50)

Batches = list[tuple[Tensor, list[PastedObjects]]]


def train(model: torch.nn.Module, batches: Batches, epochs: int, lr: float, desc: str) -> None:
    """Adam with a cosine schedule on the detector loss (`examples.training.train_epochs`, so binary
    layers get their hooks); trains `model` in place and leaves it in eval mode."""
    encoded = [(images, targets(truths, images.shape[2], images.shape[3])) for images, truths in batches]
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    train_epochs(
        model, encoded, lambda images, target: loss(model(images), target), optimizer, epochs=epochs, desc=desc
    )


def make_variant(name: str, trained: torch.nn.Module, example: Tensor) -> fx.GraphModule:
    """The variant's rewrite of a copy of the trained float detector (before fine-tuning)."""
    gm = capture(copy.deepcopy(trained), example)
    if name.startswith("binary"):
        gm = Pipeline.from_spec(BINARIZE).run(gm).graph_module
    if name.endswith("iff"):
        gm = Pipeline.from_spec(iff_spec(gm)).run(gm).graph_module
    if name == "pruned":
        gm = Pipeline.from_spec("rank_prune(rate=0.5)").run(gm, (example,), data=[(example,)]).graph_module
    return gm


def evaluate(run: Callable[[np.ndarray], list[np.ndarray]], batches: Batches) -> dict[str, float]:
    """Tiny AP (IoU 0.5, 0.25) and tiny MR (IoU 0.5) of a runtime's outputs on the test batches."""
    gts, dets = [], []
    for images, truths in batches:
        logits, regression = run(images.numpy())
        for (boxes, scores), truth in zip(decode(logits, regression), truths):
            dets.append(Detections(boxes, scores))
            gts.append(GroundTruth(truth.boxes, ignore=truth.ignore, uncertain=truth.uncertain))
    return {
        "AP50_tiny": average_precision(gts, dets, "tiny", 0.5),
        "AP25_tiny": average_precision(gts, dets, "tiny", 0.25),
        "MR50_tiny": miss_rate(gts, dets, "tiny", 0.5),
    }


def run_seed(seed: int, budget: Budget, workdir: Path, progress: tqdm) -> list[dict]:
    """Train, rewrite, fine-tune, lower, evaluate and time every variant for one seed."""
    shape = (1, 1, budget.size, budget.size)
    train_set = tiny_objects(shape, split="train", count=budget.train_images, seed=seed)
    test_set = tiny_objects(shape, split="test", count=budget.test_images, seed=0)
    example, x1 = test_set[0][0][:8], test_set[0][0][:1].numpy()
    torch.manual_seed(seed)
    model = tiny_detector()
    train(model, train_set, budget.float_epochs, FLOAT_LR, f"seed {seed} float training")
    rows, runs = [], []
    for name in VARIANTS:
        torch.manual_seed(seed)
        gm = make_variant(name, model, example)
        train(gm, train_set, budget.finetune_epochs, FINETUNE_LR, f"seed {seed} {name}")
        deployed = Pipeline.from_spec("fuse_bn").run(gm).graph_module
        lowering = "custom" if name.startswith("binary") else "float"
        path = export(deployed, (example,), workdir / f"{name.replace(' + ', '_')}_{seed}.onnx", lowering=lowering)
        ort, packed = session(path, threads=1), PackedModel(path, threads=1)
        metrics = evaluate(lambda x, ort=ort: run_session(ort, [x]), test_set)
        agreement = max(
            float(np.abs(p - o).max()) for p, o in zip(packed.run([x1]), run_session(ort, [x1]), strict=True)
        )
        rows.append({"variant": name, "seed": seed, "lowering": lowering, **metrics, "packed_vs_ort": agreement})
        runs += [lambda ort=ort: run_session(ort, [x1]), lambda packed=packed: packed.run([x1])]
        progress.update()
    times = interleaved_median_ms(runs, repeats=budget.repeats, clock=time.thread_time)
    for row, ort_ms, packed_ms in zip(rows, times[::2], times[1::2], strict=True):
        row["onnxruntime_ms"], row["packed_ms"] = ort_ms, packed_ms
    return rows


def summarize(rows: list[dict]) -> str:
    """One table row per variant: metrics as mean ± std over seeds (in %), latencies as means."""
    body = []
    for name in VARIANTS:
        mine = [row for row in rows if row["variant"] == name]
        cells = [_mean_std([100 * row[key] for row in mine]) for key in METRICS]
        times = [f"{np.mean([row[key] for row in mine]):.3f}" for key in ("onnxruntime_ms", "packed_ms")]
        body.append((name, mine[0]["lowering"], *cells, *times))
    headers = ("variant", "lowering", "tiny AP@0.5 %", "tiny AP@0.25 %", "tiny MR@0.5 %", "onnxruntime ms", "packed ms")
    return format_table(headers, body, (False, False, True, True, True, True, True))


def _mean_std(values: list[float]) -> str:
    return f"{np.mean(values):.1f} ± {np.std(values):.1f}" if len(values) > 1 else f"{values[0]:.1f}"


def run(budget: Budget, seeds: int) -> list[dict]:
    """Every variant for seeds 0 … seeds − 1; one dict per (variant, seed)."""
    rows = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        tqdm(total=seeds * len(VARIANTS), desc="variants", unit="variant") as bar,
    ):
        for seed in range(seeds):
            rows += run_seed(seed, budget, Path(tmp), bar)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="less data and training (a few minutes on 2 cores)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for training")
    parser.add_argument("--json", help="write every (variant, seed) result here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    budget = QUICK if args.quick else FULL
    started = time.perf_counter()
    rows = run(budget, args.seeds)
    print(
        f"\ntiny_detector on tiny_objects ({budget.size}×{budget.size} gray, synthetic placement): "
        f"{budget.train_images} train / {budget.test_images} test images, float {budget.float_epochs} epochs, "
        f"then every variant fine-tuned {budget.finetune_epochs} epochs (Adam); seeds 0–{args.seeds - 1}\n"
    )
    print(summarize(rows))
    agreement = max(row["packed_vs_ort"] for row in rows)
    print(
        f"AP/MR on onnxruntime's outputs; packed runtime vs onnxruntime: max |difference| of outputs {agreement:.2g}. "
        f"Latency: batch 1, median thread CPU time of {budget.repeats} interleaved rounds, 1 thread, "
        f"mean over seeds; load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}; "
        f"{time.perf_counter() - started:.0f} s in all"
    )
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "budget": vars(budget), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
