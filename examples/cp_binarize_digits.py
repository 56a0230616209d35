"""Binarized digits ResNet-20 trained with distillation vs distillation + the Child-Parent kernel loss.

Per seed: the zoo's ResNet-20 is trained in float on scikit-learn's digits (16×16); that float net is
the teacher of the distillation and the parent of CP-NAS's kernel loss. For each variant, the same
float weights are binarized (`binarize`, the XNOR scheme unless `--scheme`) and the binary child is
trained with the same budget (Adam, cosine schedule, the `bitfx.train` hooks) on

- distillation: `Distillation(teacher, child, label_weight=1)`;
- distillation + CP (w): the same plus `ChildParentLoss(parent, child, weight=w)` for each w of
  `--cp-weights`.

Reported: test accuracy and the kernel reconstruction error (Σ over binary layers of
mean((W_parent − q(W_child))²), what `ChildParentLoss.kernel_errors` measures) before and after
training, mean ± std over seeds.

    python -m examples.cp_binarize_digits [--quick] [--seeds 3] [--epochs 6] [--cp-weights 1,10] [--scheme xnor]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from bitfx.ir import capture
from bitfx.ir.table import format_table
from bitfx.passes import Pipeline
from bitfx.train import ChildParentLoss, Distillation
from bitfx.zoo import digits, resnet20
from examples.seeds import mean_std
from examples.training import accuracy, train_classifier, train_epochs

SHAPE = (1, 3, 16, 16)


def run_seed(seed: int, args: argparse.Namespace, weights: list[float]) -> dict[str, dict[str, float]]:
    """Per variant: accuracy, and the kernel error before and after the binary training."""
    train, test = digits(SHAPE, split="train", seed=seed), digits(SHAPE, split="test")
    torch.manual_seed(seed)
    parent = capture(train_classifier(resnet20(), train, epochs=args.epochs, seed=seed), train[0][0][:8])
    rows = {"float parent": {"accuracy": accuracy(parent, test), "error_before": 0.0, "error_after": 0.0}}
    for weight in (0.0, *weights):
        torch.manual_seed(seed)
        child = Pipeline.from_spec(f"binarize(scheme={args.scheme})").run(parent).graph_module
        distill, kernels = Distillation(parent, child, label_weight=1.0), ChildParentLoss(parent, child)
        before = sum(kernels.kernel_errors().values())
        if weight:
            cp = ChildParentLoss(parent, child, weight=weight)

            def loss(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
                return distill(images, labels) + cp()
        else:
            loss = distill
        name = f"distillation + CP (w={weight:g})" if weight else "distillation"
        train_epochs(
            child, train, loss, torch.optim.Adam(child.parameters(), lr=args.lr), epochs=args.epochs, desc=name
        )
        after = sum(kernels.kernel_errors().values())
        rows[name] = {"accuracy": accuracy(child, test), "error_before": before, "error_after": after}
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, 2 epochs")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=6, help="epochs of float training, and of each binary training")
    parser.add_argument("--cp-weights", default="1,10", help="weights of the Child-Parent loss to compare")
    parser.add_argument("--scheme", default="xnor")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate of the binary training")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.epochs = 1, 2
    torch.set_num_threads(1)
    start = time.perf_counter()
    weights = [float(w) for w in args.cp_weights.split(",") if w]
    results = [run_seed(seed, args, weights) for seed in range(args.seeds)]
    print(
        f"ResNet-20 on digits 16×16, {args.scheme} child, {args.epochs} float + {args.epochs} binary epochs "
        f"(Adam lr {args.lr:g}); mean ± std over {args.seeds} seeds"
    )
    print(
        format_table(
            ("training", "test accuracy %", "kernel error before", "kernel error after"),
            [
                (
                    name,
                    mean_std([r[name]["accuracy"] for r in results], 100, 2),
                    mean_std([r[name]["error_before"] for r in results], 1, 4),
                    mean_std([r[name]["error_after"] for r in results], 1, 4),
                )
                for name in results[0]
            ],
            (False, True, True, True),
        )
    )
    print(f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}; {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
