"""HRank vs L1-norm vs random channel selection on real data, at the same MACs.

Trains the zoo's ResNet-20 on scikit-learn's bundled handwritten digits (upsampled to
16×16, no download), prunes it to about half of its MACs with `rank_prune` using each
selection criterion — same groups, same rates, same rounding, so only *which* channels go
differs — fine-tunes every pruned net for a few epochs (SGD lr 0.01, momentum 0.9, weight
decay 5e-4, as HRank) and reports test accuracy, mean ± std over seeds. HRank calibrates on
5 batches of 128 training images, as the paper's code does. The unpruned net is fine-tuned
for the same epochs too, so the comparison is not flattered by the extra training. A second
table compares the criteria right after pruning, without fine-tuning, at lower rates.

`--progressive` runs HRank's schedule instead, with HRank's residual rule (`residual="keep"`:
only each block's inner conv loses channels): the block convs are pruned one at a time in
graph order, each followed by `--epochs-per-layer` fine-tune epochs (HRank's code prunes a
layer, fine-tunes, then the next), next to one-shot pruning of the same channels counts
fine-tuned for the same total epochs, for each criterion at the same MACs.

    python -m examples.prune_digits [--seeds 3] [--epochs 6] [--finetune-epochs 3] [--target-macs 0.5]
                                    [--sweep-rates 0.05,0.1,0.2] [--progressive [--epochs-per-layer 1]]
                                    [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import time
from pathlib import Path

import torch
from tqdm import tqdm

from bitfx.ir import capture, total_cost
from bitfx.ir.table import format_table
from bitfx.passes import LayerSelection, Pipeline, RankPrune
from bitfx.zoo import digits, resnet20
from examples.seeds import mean_std
from examples.training import accuracy, train_classifier

SHAPE = (1, 3, 16, 16)
CRITERIA = ("rank", "l1", "random")


def rate_for_macs(gm: torch.fx.GraphModule, target: float, residual: str = "stage") -> tuple[float, float]:
    """The smallest global rate whose pruned net has at most `target` × the MACs, and that ratio.
    The MACs depend only on how many channels go, so the (data-free) L1 plan is enough."""
    low, high = 0.0, 0.95
    for _ in range(20):
        middle = (low + high) / 2
        if RankPrune(rate=middle, criterion="l1", residual=residual).plan(gm).macs_ratio <= target:
            high = middle
        else:
            low = middle
    return high, RankPrune(rate=high, criterion="l1", residual=residual).plan(gm).macs_ratio


def block_convs(gm: torch.fx.GraphModule) -> list[str]:
    """The layers `residual="keep"` prunes in ResNet-20: each block's first conv, in graph order."""
    return [n.target for n in gm.graph.nodes if n.op == "call_module" and re.fullmatch(r"layers\.\d+\.conv1", n.target)]


def run_progressive_seed(seed: int, rate: float, epochs: int, per_layer: int) -> dict[str, dict[str, float]]:
    """Per criterion: accuracy after progressive pruning (one block conv at a time, `per_layer` fine-tune
    epochs after each) and after one-shot pruning fine-tuned for the same total epochs; both at `rate`."""
    train = digits(SHAPE, split="train", seed=seed)
    test = digits(SHAPE, split="test")
    calibration = digits(SHAPE, split="train", batch_size=128, seed=seed)[:5]
    torch.manual_seed(seed)
    gm = capture(train_classifier(resnet20(), train, epochs=epochs, seed=seed), (test[0][0],))
    layers = block_convs(gm)
    total = per_layer * len(layers)
    unpruned = train_classifier(copy.deepcopy(gm), train, epochs=total, lr=0.01, seed=seed)
    rows = {"unpruned": {"one-shot": accuracy(unpruned, test), "macs_ratio": 1.0}}
    for criterion in CRITERIA:
        common = {"criterion": criterion, "seed": seed, "batches": 5, "residual": "keep"}
        one_shot = Pipeline([RankPrune(rate=rate, **common)]).run(gm, data=calibration).graph_module
        macs = total_cost(one_shot).macs / total_cost(gm).macs
        one_shot = train_classifier(one_shot, train, epochs=total, lr=0.01, seed=seed)
        progressive = copy.deepcopy(gm)
        for layer in tqdm(layers, desc=f"progressive {criterion}", unit="layer", leave=False):
            step = RankPrune(rate=0.0, rates=LayerSelection(by_name={layer: rate}), **common)
            progressive = Pipeline([step]).run(progressive, data=calibration).graph_module
            progressive = train_classifier(progressive, train, epochs=per_layer, lr=0.01, seed=seed)
        rows[criterion] = {
            "one-shot": accuracy(one_shot, test),
            "progressive": accuracy(progressive, test),
            "macs_ratio": macs,
            "progressive_macs_ratio": total_cost(progressive).macs / total_cost(gm).macs,
        }
    return rows


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=6, help="training epochs of the unpruned net")
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--target-macs", type=float, default=0.5, help="prune to at most this fraction of the MACs")
    parser.add_argument(
        "--sweep-rates", default="0.05,0.1,0.2", help="lower rates at which to compare the criteria without fine-tuning"
    )
    parser.add_argument("--progressive", action="store_true", help="HRank's layer-by-layer schedule vs one-shot")
    parser.add_argument("--epochs-per-layer", type=int, default=1, help="fine-tune epochs after each layer")
    parser.add_argument("--quick", action="store_true", help="1 seed, 2 training epochs (a smoke run)")
    parser.add_argument("--json", help="write the per-seed results here")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.epochs, args.finetune_epochs, args.sweep_rates = 1, 2, 1, ""
    torch.set_num_threads(1)
    start = time.perf_counter()
    if args.progressive:
        progressive_table(args)
        print(f"\n{time.perf_counter() - start:.0f} s")
        return
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
            mean_std([r[key]["before"] for r in results], 100),
            mean_std([r[key]["after"] for r in results], 100),
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
                    (labels[key], *(mean_std([r[key][f"no_finetune@{low:g}"] for r in results], 100) for low in sweep))
                    for key in CRITERIA
                ],
                (False, *(True for _ in sweep)),
            )
        )
    print(f"\n{time.perf_counter() - start:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"rate": rate, "args": vars(args), "seeds": results}, indent=2) + "\n")


def progressive_table(args: argparse.Namespace) -> None:
    """Run and print the progressive vs one-shot comparison."""
    rate, macs_ratio = rate_for_macs(capture(resnet20(), (torch.zeros(SHAPE),)), args.target_macs, "keep")
    print(f"residual=keep, rate {rate:.3f} on each block's first conv → {macs_ratio:.3f}× the MACs")
    results = [
        run_progressive_seed(seed, rate, args.epochs, args.epochs_per_layer)
        for seed in tqdm(range(args.seeds), desc="seeds", unit="seed")
    ]
    total = args.epochs_per_layer * len(block_convs(capture(resnet20(), (torch.zeros(SHAPE),))))
    labels = {"unpruned": "unpruned", "rank": "HRank (rank)", "l1": "L1-norm", "random": "random"}
    print(
        f"\nResNet-20 on digits {SHAPE[2]}×{SHAPE[3]}, {args.epochs} epochs, then pruned (residual=keep) and "
        f"fine-tuned {total} epochs in all; test accuracy % over seeds 0–{args.seeds - 1}"
    )
    print(
        format_table(
            (
                "selection",
                "MACs ratio",
                f"one-shot, then {total} epochs",
                f"progressive, {args.epochs_per_layer}/layer",
            ),
            [
                (
                    labels[key],
                    f"{results[0][key]['macs_ratio']:.3f}",
                    mean_std([r[key]["one-shot"] for r in results], 100),
                    "—" if key == "unpruned" else mean_std([r[key]["progressive"] for r in results], 100),
                )
                for key in labels
            ],
            (False, True, True, True),
        )
    )
    if args.json:
        Path(args.json).write_text(json.dumps({"rate": rate, "args": vars(args), "seeds": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
