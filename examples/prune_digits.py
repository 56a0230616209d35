"""HRank vs L1-norm vs random channel selection on real data, at the same MACs.

Trains the zoo's ResNet-20 on scikit-learn's bundled handwritten digits (upsampled to
16×16, no download), prunes it to about half of its MACs with `rank_prune` using each
selection criterion — same groups, same rates, same rounding, so only *which* channels go
differs — fine-tunes every pruned net for a few epochs (SGD lr 0.01, momentum 0.9, weight
decay 5e-4, as HRank) and reports test accuracy, mean ± std over seeds. HRank calibrates on
5 batches of 128 training images, as the paper's code does. The unpruned net is fine-tuned
for the same epochs too, so the comparison is not flattered by the extra training. A second
table compares the criteria right after pruning, without fine-tuning, at lower rates.

    python -m examples.prune_digits [--seeds 3] [--epochs 6] [--finetune-epochs 3] [--target-macs 0.5]
                                    [--sweep-rates 0.05,0.1,0.2] [--json PATH]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch

from bitfx.ir import capture, total_cost
from bitfx.ir.table import format_table
from bitfx.passes import Pipeline, RankPrune
from bitfx.zoo import digits, resnet20
from examples.training import accuracy, train_classifier

SHAPE = (1, 3, 16, 16)
CRITERIA = ("rank", "l1", "random")


def rate_for_macs(gm: torch.fx.GraphModule, target: float) -> tuple[float, float]:
    """The smallest global rate whose pruned net has at most `target` × the MACs, and that ratio.
    The MACs depend only on how many channels go, so the (data-free) L1 plan is enough."""
    low, high = 0.0, 0.95
    for _ in range(20):
        middle = (low + high) / 2
        if RankPrune(rate=middle, criterion="l1").plan(gm).macs_ratio <= target:
            high = middle
        else:
            low = middle
    return high, RankPrune(rate=high, criterion="l1").plan(gm).macs_ratio


def run_seed(
    seed: int, rate: float, epochs: int, finetune_epochs: int, sweep: list[float]
) -> dict[str, dict[str, float]]:
    """Accuracies of the unpruned net and of each criterion, before and after fine-tuning, and
    of each criterion right after pruning (no fine-tuning) at each rate of `sweep`."""
    train = digits(SHAPE, split="train", seed=seed)
    test = digits(SHAPE, split="test")
    calibration = digits(SHAPE, split="train", batch_size=128, seed=seed)[:5]
    torch.manual_seed(seed)
    model = train_classifier(resnet20(), train, epochs=epochs, seed=seed)
    gm = capture(model, (test[0][0],))
    unpruned = copy.deepcopy(gm)
    rows = {"unpruned": {"before": accuracy(gm.eval(), test), "macs_ratio": 1.0, "params_ratio": 1.0}}
    rows["unpruned"]["after"] = accuracy(
        train_classifier(unpruned, train, epochs=finetune_epochs, lr=0.01, seed=seed), test
    )
    for criterion in CRITERIA:
        prune = RankPrune(rate=rate, criterion=criterion, seed=seed, batches=5)
        pruned = Pipeline([prune]).run(gm, data=calibration).graph_module
        before = accuracy(pruned.eval(), test)
        cost, base = total_cost(pruned), total_cost(gm)
        after = accuracy(train_classifier(pruned, train, epochs=finetune_epochs, lr=0.01, seed=seed), test)
        rows[criterion] = {
            "before": before,
            "after": after,
            "macs_ratio": cost.macs / base.macs,
            "params_ratio": cost.params / base.params,
        }
        for low in sweep:
            pruned = (
                Pipeline([RankPrune(rate=low, criterion=criterion, seed=seed, batches=5)])
                .run(gm, data=calibration)
                .graph_module
            )
            rows[criterion][f"no_finetune@{low:g}"] = accuracy(pruned.eval(), test)
    return rows


def _mean_std(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.2f} ± {100 * spread:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=6, help="training epochs of the unpruned net")
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--target-macs", type=float, default=0.5, help="prune to at most this fraction of the MACs")
    parser.add_argument(
        "--sweep-rates", default="0.05,0.1,0.2", help="lower rates at which to compare the criteria without fine-tuning"
    )
    parser.add_argument("--json", help="write the per-seed results here")
    args = parser.parse_args()
    start = time.perf_counter()
    rate, macs_ratio = rate_for_macs(capture(resnet20(), (torch.zeros(SHAPE),)), args.target_macs)
    print(f"global rate {rate:.3f} → {macs_ratio:.3f}× the MACs")
    sweep = [float(r) for r in args.sweep_rates.split(",") if r]
    results = [run_seed(seed, rate, args.epochs, args.finetune_epochs, sweep) for seed in range(args.seeds)]
    labels = {"unpruned": "unpruned", "rank": "HRank (rank)", "l1": "L1-norm", "random": "random"}
    rows = [
        (
            labels[key],
            f"{results[0][key]['macs_ratio']:.3f}",
            f"{results[0][key]['params_ratio']:.3f}",
            _mean_std([r[key]["before"] for r in results]),
            _mean_std([r[key]["after"] for r in results]),
        )
        for key in labels
    ]
    print(
        f"\nResNet-20 on digits {SHAPE[2]}×{SHAPE[3]}, {args.epochs} epochs, then pruned and fine-tuned "
        f"{args.finetune_epochs} epochs; test accuracy % over {args.seeds} seeds"
    )
    print(
        format_table(
            (
                "selection",
                "MACs ratio",
                "params ratio",
                "accuracy after pruning",
                f"after {args.finetune_epochs} fine-tune epochs",
            ),
            rows,
            (False, True, True, True, True),
        )
    )
    if sweep:
        print(f"\naccuracy % right after pruning (no fine-tuning) at lower global rates, over {args.seeds} seeds")
        print(
            format_table(
                ("selection", *(f"rate {low:g}" for low in sweep)),
                [
                    (labels[key], *(_mean_std([r[key][f"no_finetune@{low:g}"] for r in results]) for low in sweep))
                    for key in CRITERIA
                ],
                (False, *(True for _ in sweep)),
            )
        )
    print(f"\n{time.perf_counter() - start:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"rate": rate, "args": vars(args), "seeds": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
