"""Gated channel pruning (ℓ1 on channel gates, trained with SGD or with CoGD) vs HRank, L1-norm and
random selection, on the digits ResNet-20 at the MACs of `examples.prune_digits`.

Per seed: the zoo's ResNet-20 is trained on scikit-learn's digits (16×16) as in
`examples.prune_digits`; the global rate that brings it to `--target-macs` of its MACs is found the
same way. Every method then gets the same number of further epochs:

- gate (SGD) / gate (CoGD): `insert_gates`, then `--gate-epochs` epochs of cross-entropy +
  λ·Σ|g| (`gate_l1_penalty`), with SGD or with `bitfx.train.CoGD` (each gate paired with the conv
  weights whose output channels it scales); `rank_prune(criterion="gate")` at the rate; then
  `--finetune-epochs` epochs with the gates as ordinary parameters;
- HRank / L1-norm / random: `rank_prune` at the rate, then `--gate-epochs` + `--finetune-epochs`
  epochs of fine-tuning.

All training is SGD-momentum 0.9, weight decay 5e-4 (none on gates), lr 0.01 (gates: `--gate-lr`)
and cosine. Test accuracy, mean ± std over seeds.

    python -m examples.gate_prune_digits [--quick] [--seeds 3] [--epochs 6] [--gate-epochs 2]
                                         [--finetune-epochs 3] [--penalty 0.01] [--gate-lr 0.1]
                                         [--target-macs 0.5]
"""

from __future__ import annotations

import argparse
import copy
import os
import time

import torch
from torch import fx, nn

from bitfx.ir import capture, total_cost
from bitfx.ir.gate import ChannelGate, gate_nodes
from bitfx.ir.table import format_table
from bitfx.passes import Pipeline, RankPrune
from bitfx.train import CoGD, GatedWeight, gate_l1_penalty
from bitfx.zoo import digits, resnet20
from examples.prune_digits import SHAPE, rate_for_macs
from examples.seeds import mean_std
from examples.training import accuracy, train_classifier, train_epochs

LR = 0.01
METHODS = ("gate (SGD)", "gate (CoGD)", "rank", "l1", "random")


def gated_weights(gm: fx.GraphModule) -> list[GatedWeight]:
    """One (conv weight, gate) pair per gate: the conv whose output channels the gate scales (directly, or
    through the BatchNorm between them)."""
    pairs = []
    for node in gate_nodes(gm):
        source = node.args[0]
        if isinstance(gm.get_submodule(source.target), nn.modules.batchnorm._BatchNorm):
            source = source.args[0]
        pairs.append(GatedWeight(gm.get_submodule(source.target).weight, gm.get_submodule(node.target).gate, dim=0))
    return pairs


def train_gated(
    gm: fx.GraphModule, train: list, *, epochs: int, penalty: float, gate_lr: float, cogd: bool, seed: int
) -> None:
    """Cross-entropy + penalty·Σ|g| over the unique gates (learning rate `gate_lr`), with SGD or CoGD; in place."""
    torch.manual_seed(seed)
    gates = list({id(m.gate): m.gate for m in gm.modules() if isinstance(m, ChannelGate)}.values())
    gate_ids = {id(g) for g in gates}
    weights = [p for p in gm.parameters() if id(p) not in gate_ids]
    groups = [{"params": weights}, {"params": gates, "weight_decay": 0.0, "lr": gate_lr}]
    if cogd:
        optimizer = CoGD(
            groups, gated_weights(gm), lr=LR, momentum=0.9, weight_decay=5e-4, total_steps=epochs * len(train)
        )
    else:
        optimizer = torch.optim.SGD(groups, lr=LR, momentum=0.9, weight_decay=5e-4)

    def loss(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(gm(images), labels) + gate_l1_penalty(gates, penalty)

    train_epochs(gm, train, loss, optimizer, epochs=epochs, desc="gated " + ("CoGD" if cogd else "SGD"))


def run_seed(seed: int, rate: float, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Per method: accuracy right after pruning, after the further training, and the MACs ratio."""
    train = digits(SHAPE, split="train", seed=seed)
    test = digits(SHAPE, split="test")
    calibration = digits(SHAPE, split="train", batch_size=128, seed=seed)[:5]
    torch.manual_seed(seed)
    gm = capture(train_classifier(resnet20(), train, epochs=args.epochs, seed=seed), (test[0][0],))
    base = total_cost(gm).macs
    rows: dict[str, dict[str, float]] = {"unpruned": {"before": accuracy(gm.eval(), test), "macs_ratio": 1.0}}
    for method in METHODS:
        work = copy.deepcopy(gm)
        extra = args.finetune_epochs
        if method.startswith("gate"):
            work = Pipeline.from_spec("insert_gates").run(work).graph_module
            train_gated(
                work,
                train,
                epochs=args.gate_epochs,
                penalty=args.penalty,
                gate_lr=args.gate_lr,
                cogd="CoGD" in method,
                seed=seed,
            )
            prune = RankPrune(rate=rate, criterion="gate")
        else:
            extra += args.gate_epochs
            prune = RankPrune(rate=rate, criterion=method, seed=seed, batches=5)
        pruned = Pipeline([prune]).run(work, data=calibration).graph_module
        before = accuracy(pruned.eval(), test)
        after = accuracy(train_classifier(pruned, train, epochs=extra, lr=LR, seed=seed), test)
        rows[method] = {"before": before, "after": after, "macs_ratio": total_cost(pruned).macs / base}
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, 2+1+1 epochs: a few minutes on 2 cores")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=6, help="training epochs of the unpruned net")
    parser.add_argument("--gate-epochs", type=int, default=2, help="gated training epochs (fine-tuning for others)")
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--penalty", type=float, default=0.01, help="λ of the ℓ1 gate penalty")
    parser.add_argument("--gate-lr", type=float, default=0.1, help="learning rate of the gates")
    parser.add_argument("--target-macs", type=float, default=0.5)
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.epochs, args.gate_epochs, args.finetune_epochs = 1, 2, 1, 1
    torch.set_num_threads(1)
    start = time.perf_counter()
    rate, macs_ratio = rate_for_macs(capture(resnet20(), (torch.zeros(SHAPE),)), args.target_macs)
    print(f"global rate {rate:.3f} → {macs_ratio:.3f}× the MACs")
    results = [run_seed(seed, rate, args) for seed in range(args.seeds)]
    labels = {"unpruned": "unpruned", **{m: m for m in METHODS[:2]}, "rank": "HRank", "l1": "L1-norm"}
    labels["random"] = "random"
    rows = [
        (
            labels[key],
            f"{results[0][key]['macs_ratio']:.3f}",
            mean_std([r[key]["before"] for r in results], 100),
            "-" if key == "unpruned" else mean_std([r[key]["after"] for r in results], 100),
        )
        for key in labels
    ]
    print(
        f"\nResNet-20 on digits 16×16, {args.epochs} epochs; then {args.gate_epochs} gated (or fine-tune) + "
        f"{args.finetune_epochs} fine-tune epochs, λ={args.penalty:g}; test accuracy % over {args.seeds} seeds"
    )
    print(
        format_table(
            ("selection", "MACs ratio", "after pruning", f"after {args.gate_epochs + args.finetune_epochs} epochs"),
            rows,
            (False, True, True, True),
        )
    )
    print(f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}; {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
