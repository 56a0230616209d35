"""Does RBNN's rotation help a binary CNN? Plain binarization vs rotation on the bundled digits.

Trains one small CNN (a float first conv, three binary 3×3 convs of 32–64 channels, a float
classifier) on scikit-learn's handwritten digits (8×8, no download) as:

- `xnor`, `bireal`, `irnet`: the `binarize` pass with that scheme;
- `rbnn`: `binarize,rotate`, RBNN as released (random R1, R2, θ = π/2, 3 Procrustes steps
  per epoch, learnable α, training-aware sign, activations standardised per sample);
- ablations of `rotate`: no activation standardisation (`rbnn-unstandardized`); θ ~ U(0, π/2)
  as in a version of the authors' CIFAR code (`rbnn-uniform-theta`);
  R1, R2 starting at the identity (`rbnn-identity-start`); R1 = R2 = I fixed, i.e. RBNN's
  recipe without any rotation (`rbnn-no-rotation`).

Every variant gets the same budget: the same epochs, batches and seeds, the same optimizer
(Adam lr 1e-3 with L2 weight decay 5e-4 on every parameter, or with `--optimizer sgd` the
authors' SGD, momentum 0.9, lr 0.1, L2 1e-4; their code relies on weight decay to move θ
off π/2), a cosine schedule and the `bitfx.train` hooks. Two starts: from scratch on the labels (the
paper's setting), and from the trained float model with distillation (the usual bitfx flow).
Two model shapes (`--model`): `plain` (no shortcuts, whatever the scheme's default) and
`shortcut` (64 channels throughout, a real-valued shortcut around every binary conv: the shape of
the networks RBNN and Bi-Real train). Reported: test accuracy mean ± std over seeds, the float
model's, and the weight flip rates.

    python -m examples.rbnn_digits [--seeds 3] [--first-seed 0] [--epochs 10] [--starts scratch,float]
                                   [--variants xnor,rbnn,...]
                                   [--optimizer adam|sgd] [--model plain|shortcut] [--lr LR] [--weight-decay WD]
                                   [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from torch import fx, nn
from tqdm import tqdm

from bitfx.ir import capture
from bitfx.ir.binary import BinaryConv2d, RotatedBinaryConv2d
from bitfx.ir.table import format_table
from bitfx.passes import Pipeline
from bitfx.train import Distillation
from bitfx.zoo import digits
from examples.seeds import mean_std
from examples.training import accuracy, train_classifier, train_epochs

SHAPE = (1, 1, 8, 8)
VARIANTS = {  # (binarize arguments, what runs after binarize)
    "xnor": ("scheme=xnor", ""),
    "bireal": ("scheme=bireal", ""),
    "irnet": ("scheme=irnet", ""),
    "rbnn": ("", "rotate"),
    "rbnn-unstandardized": ("", "rotate(standardize_activations=false)"),
    "rbnn-uniform-theta": ("", "rotate(angle_init=uniform)"),
    "rbnn-identity-start": ("", "rotate(init=identity)"),
    "rbnn-no-rotation": ("", "rotate(init=identity, iterations=0)"),
}
MODELS = ("plain", "shortcut")
STARTS = ("scratch", "float")
DEFAULTS = {"adam": {"lr": 1e-3, "weight_decay": 5e-4}, "sgd": {"lr": 0.1, "weight_decay": 1e-4}}


def small_cnn(first_width: int = 32) -> nn.Sequential:
    """Float first conv, three binarizable 3×3 convs, float classifier. With `first_width=64`
    every binarizable conv keeps its input's shape, so each can have a real-valued shortcut."""

    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(
        *block(1, first_width),
        *block(first_width, 64),
        nn.MaxPool2d(2),
        *block(64, 64),
        *block(64, 64),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, 10),
    )


def pipeline_spec(variant: str, model: str) -> str:
    """The pass spec of a variant; `shortcut` puts a real-valued shortcut around every binary conv
    (RBNN's and Bi-Real's network shape), `plain` none, whatever the scheme's default."""
    arguments, after = VARIANTS[variant]
    shortcuts = f"shortcuts={'true' if model == 'shortcut' else 'false'}"
    binarize = f"binarize({', '.join(a for a in (arguments, shortcuts) if a)})"
    return f"{binarize},{after}" if after else binarize


def binary_signs(gm: fx.GraphModule) -> dict[str, torch.Tensor]:
    """The deployed ±1 weights of every binary conv, by name."""
    return {name: m.deploy_tensors()[0] for name, m in gm.named_modules() if isinstance(m, BinaryConv2d)}


def flip_rate(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> float:
    """Fraction of binary weights whose sign differs between `before` and `after`."""
    flipped = sum(int((before[name] != after[name]).sum()) for name in after)
    return flipped / sum(value.numel() for value in after.values())


def make_optimizer(parameters, name: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """Adam, or SGD with momentum 0.9 (the authors' optimizer), both with L2 weight decay."""
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=lr, momentum=0.9, weight_decay=weight_decay)
    return torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay)


def run(
    start: str,
    variant: str,
    seed: int,
    float_model: fx.GraphModule | None,
    train,
    test,
    epochs: int,
    recipe: dict,
    model: str = "plain",
) -> dict[str, float | None]:
    """Binarize (and rotate), train, and measure one variant."""
    torch.manual_seed(seed)
    fresh = small_cnn(64 if model == "shortcut" else 32)
    initial = float_model if start == "float" else capture(fresh.eval(), train[0][0][:8])
    student = Pipeline.from_spec(pipeline_spec(variant, model)).run(initial).graph_module
    start_signs = {
        name: torch.where(initial.get_submodule(name).weight.detach() < 0, -1.0, 1.0) for name in binary_signs(student)
    }
    pass_signs = binary_signs(student)
    if start == "float":
        loss_fn = Distillation(float_model, student, label_weight=1.0)
    else:
        loss_fn = lambda images, labels: nn.functional.cross_entropy(student(images), labels)  # noqa: E731
    began = time.perf_counter()
    reported = train_epochs(
        student, train, loss_fn, make_optimizer(student.parameters(), **recipe), epochs=epochs, desc=variant
    )
    first_update = [
        v for v in reported[0].values() if "rotation_error" in v
    ]  # the first epoch's update, per rotated layer
    seconds = time.perf_counter() - began
    final_signs = binary_signs(student)
    angles = [
        m.weight_quantizer.angle.detach().sin().abs() for m in student.modules() if isinstance(m, RotatedBinaryConv2d)
    ]
    return {
        "accuracy": accuracy(student, test),
        "flips_in_training": flip_rate(pass_signs, final_signs),
        "flips_from_start": flip_rate(start_signs, final_signs),
        "mean_abs_sin_theta": float(torch.cat(angles).mean()) if angles else None,
        "rotation_error_before": statistics.fmean(v["rotation_error_before"] for v in first_update)
        if first_update
        else None,
        "rotation_error_after": statistics.fmean(v["rotation_error"] for v in first_update) if first_update else None,
        "train_seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0, help="run seeds first-seed … first-seed + seeds − 1")
    parser.add_argument("--epochs", type=int, default=10, help="epochs of float training, and of every binary training")
    parser.add_argument(
        "--starts",
        default=",".join(STARTS),
        help="scratch (labels only) and/or float (from the trained float model, distilled)",
    )
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"any of: {', '.join(VARIANTS)}")
    parser.add_argument(
        "--model",
        choices=MODELS,
        default="plain",
        help="plain: 32-64-64-64, no shortcuts; shortcut: 64-64-64-64, a real shortcut around every binary conv",
    )
    parser.add_argument("--optimizer", choices=tuple(DEFAULTS), default="adam")
    parser.add_argument("--lr", type=float, help="default: 1e-3 for adam, 0.1 for sgd (the authors')")
    parser.add_argument(
        "--weight-decay", type=float, help="L2 on every parameter; default: 5e-4 for adam, 1e-4 for sgd (the authors')"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (one keeps a shared machine from thrashing)"
    )
    parser.add_argument("--json", help="write every measurement here")
    args = parser.parse_args()
    starts, variants = args.starts.split(","), args.variants.split(",")
    unknown = sorted(set(starts) - set(STARTS)) + sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(
            f"unknown start or variant {unknown}; starts: {', '.join(STARTS)}; variants: {', '.join(VARIANTS)}"
        )

    chosen = {"lr": args.lr, "weight_decay": args.weight_decay}
    recipe = {"name": args.optimizer} | {
        key: DEFAULTS[args.optimizer][key] if value is None else value for key, value in chosen.items()
    }
    torch.set_num_threads(args.threads)
    test = digits(SHAPE, split="test")
    results: dict[str, list[dict[str, float]]] = {}
    float_accuracies = []
    began = time.perf_counter()
    with tqdm(total=args.seeds * len(starts) * len(variants), desc="binary trainings", unit="run") as progress:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            train = digits(SHAPE, split="train", seed=seed)
            torch.manual_seed(seed)
            first_width = 64 if args.model == "shortcut" else 32
            float_model = None
            if "float" in starts:  # the float model is a start, and the reference accuracy
                float_model = capture(
                    train_classifier(small_cnn(first_width), train, epochs=args.epochs, seed=seed), train[0][0][:8]
                )
                float_accuracies.append(accuracy(float_model, test))
            for start in starts:
                for variant in variants:
                    measured = run(start, variant, seed, float_model, train, test, args.epochs, recipe, args.model)
                    results.setdefault(f"{start}/{variant}", []).append(measured)
                    progress.update()
    total = time.perf_counter() - began

    optimizer = "Adam" if args.optimizer == "adam" else "SGD momentum 0.9"
    print(
        f"\nSmall CNN ({args.model}) on digits 8×8, {args.epochs} epochs = {args.epochs * len(train)} steps per "
        f"training, seeds {args.first_seed}–{args.first_seed + args.seeds - 1}, "
        f"{optimizer} lr {recipe['lr']:g} + L2 {recipe['weight_decay']:g}, cosine"
    )
    float_line = mean_std(float_accuracies, 100, 1) + " %" if float_accuracies else "not trained"
    print(f"float model: {float_line} test accuracy\n")
    rows = []
    for key, runs in results.items():
        start, variant = key.split("/")
        sin_theta = [r["mean_abs_sin_theta"] for r in runs]
        rotated = runs[0]["rotation_error_before"] is not None
        before, after = (
            statistics.fmean(r[key] for r in runs) if rotated else 0.0
            for key in ("rotation_error_before", "rotation_error_after")
        )
        rows.append((
            start, variant, mean_std([r["accuracy"] for r in runs], 100, 1),
            mean_std([r["flips_in_training"] for r in runs], 100, 1),
            mean_std([r["flips_from_start"] for r in runs], 100, 1),
            "—" if sin_theta[0] is None else mean_std(sin_theta),
            f"{before:.3f} → {after:.3f}" if rotated else "—",
            f"{statistics.fmean(r['train_seconds'] for r in runs):.1f}",
        ))  # fmt: skip
    print(format_table(
        ("start", "variant", "test acc %", "flipped in training %", "≠ sign(W₀) %", "mean |sin θ| at end",
         "rotation error, 1st update", "train s"),
        rows, (False, False, True, True, True, True, True, True),
    ))  # fmt: skip
    print(f"\ntotal {total:.0f} s")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "args": vars(args),
                    "recipe": recipe,
                    "float_accuracy": float_accuracies,
                    "results": results,
                    "seconds": total,
                },
                indent=2,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
