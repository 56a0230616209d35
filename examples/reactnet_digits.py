"""ReActNet's two-step training vs one step, at the same total budget, on the bundled digits.

ReActNet trains in two steps: binary activations with real-valued weights first, then binary
weights too, starting from the first step's weights (both distilled from a real-valued teacher).
This script trains the shortcut CNN of `examples.rbnn_digits` (a float first conv, three binary
3×3 convs of 64 channels, each with a real-valued shortcut, a float classifier) on scikit-learn's
handwritten digits (8×8, no download), from scratch, as:

- `one-step`: `binarize(scheme=reactnet, shortcuts=true)`, trained 2·E epochs;
- `two-step`: `binarize(scheme=reactnet, weights=real, shortcuts=true)` trained E epochs (step 1),
  then `binarize(scheme=reactnet)` on that model (weights and RSign thresholds carried over)
  trained E epochs with a fresh optimizer (step 2).

Both are distilled from the float model trained first (KL to its softmax, no labels: ReActNet's
distribution loss), with Adam and weight decay on the conv weights only (1e-5 in step 1 and in
one-step, 0 in step 2, as the authors' scripts) and a cosine schedule per step. Reported: test
accuracy (mean ± std over seeds) after step 1 (torch; it cannot be lowered) and at the end, and
the two-step model's accuracy in onnxruntime through the `custom` lowering.

    python -m examples.reactnet_digits [--seeds 3] [--epochs 33] [--lr 1e-3] [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from torch import fx, nn
from tqdm import tqdm

from bitfx.backends.onnx import export, run_session, session
from bitfx.ir import capture
from bitfx.ir.table import format_table
from bitfx.passes import Pipeline
from bitfx.train import Distillation
from bitfx.zoo import digits
from examples.rbnn_digits import SHAPE, small_cnn
from examples.seeds import mean_std
from examples.training import accuracy, train_classifier, train_epochs

ONE_STEP = "binarize(scheme=reactnet, shortcuts=true)"
STEP_1 = "binarize(scheme=reactnet, weights=real, shortcuts=true)"
STEP_2 = "binarize(scheme=reactnet)"


def adam(model: nn.Module, lr: float, conv_weight_decay: float) -> torch.optim.Adam:
    """Adam with weight decay on the 4-D (conv) weights only, as ReActNet's training scripts."""
    convs = [p for p in model.parameters() if p.dim() == 4]
    others = [p for p in model.parameters() if p.dim() != 4]
    return torch.optim.Adam([{"params": others}, {"params": convs, "weight_decay": conv_weight_decay}], lr=lr)


def distill(teacher: fx.GraphModule, student: fx.GraphModule, train, epochs: int, lr: float, decay: float, desc: str):
    """Train `student` in place on the teacher's softmax only."""
    loss_fn = Distillation(teacher, student, label_weight=0.0)
    train_epochs(student, train, loss_fn, adam(student, lr, decay), epochs=epochs, desc=desc)


def run_seed(seed: int, epochs: int, lr: float, test) -> dict[str, float]:
    """Teacher, one-step and two-step students of one seed; their test accuracies."""
    train = digits(SHAPE, split="train", seed=seed)
    torch.manual_seed(seed)
    teacher = capture(train_classifier(small_cnn(64), train, epochs=epochs, seed=seed), train[0][0][:8])

    def fresh() -> fx.GraphModule:
        torch.manual_seed(seed)
        return capture(small_cnn(64).eval(), train[0][0][:8])

    one_step = Pipeline.from_spec(ONE_STEP).run(fresh()).graph_module
    distill(teacher, one_step, train, 2 * epochs, lr, 1e-5, "one-step")
    step_1 = Pipeline.from_spec(STEP_1).run(fresh()).graph_module
    distill(teacher, step_1, train, epochs, lr, 1e-5, "step 1")
    step_1_accuracy = accuracy(step_1, test)
    step_2 = Pipeline.from_spec(STEP_2).run(step_1).graph_module
    distill(teacher, step_2, train, epochs, lr, 0.0, "step 2")
    with tempfile.TemporaryDirectory() as tmp:
        ort = session(export(step_2, test[0][0][:8], Path(tmp) / "two_step.onnx", lowering="custom"))
        onnxruntime_accuracy = accuracy(lambda x: run_session(ort, [x.numpy()])[0], test)
    return {
        "float": accuracy(teacher, test),
        "one-step": accuracy(one_step, test),
        "two-step, after step 1 (real weights)": step_1_accuracy,
        "two-step": accuracy(step_2, test),
        "two-step in onnxruntime (custom)": onnxruntime_accuracy,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=33, help="E: epochs of each step; one-step trains 2·E")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate of every binary training")
    parser.add_argument("--quick", action="store_true", help="1 seed, 4 epochs per step (a smoke run)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--json", help="write every measurement here")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.epochs = 1, 4
    torch.set_num_threads(args.threads)
    test = digits(SHAPE, split="test")
    began = time.perf_counter()
    runs = [run_seed(seed, args.epochs, args.lr, test) for seed in tqdm(range(args.seeds), desc="seeds", unit="seed")]
    steps = args.epochs * len(digits(SHAPE, split="train", seed=0))
    print(
        f"\nShortcut CNN on digits 8×8, from scratch, distilled from the float model; {args.epochs} epochs = {steps} "
        f"Adam steps per step, {2 * steps} in all for both; lr {args.lr:g}, cosine; seeds 0–{args.seeds - 1}\n"
    )
    print(format_table(
        ("model", "test acc %", "per seed %"),
        [
            (key, mean_std([r[key] for r in runs], 100, 1), " / ".join(f"{100 * r[key]:.2f}" for r in runs))
            for key in runs[0]
        ],
        (False, True, True),
    ))  # fmt: skip
    print(f"\ntotal {time.perf_counter() - began:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "runs": runs}, indent=2) + "\n")


if __name__ == "__main__":
    main()
