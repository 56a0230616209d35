"""Binarized architecture search on the bundled digits with one of the bandit policies (BNAS, CP-NAS, ABanditNAS).

For each seed: a weight-sharing supernet of the space (every edge holds every candidate
operation, its convolutions binary through the same scheme as `binarize`) is warmed up on
random sub-networks, then the bandit core (`bitfx.search.run`) samples one operation per edge,
trains that sub-network for a few batches and rewards it with its held-out accuracy, until one
operation is left per edge. `cp` also trains a float parent supernet on the same sample and
batches; `anti_bandit` trains and rewards under a PGD attack (ABanditNAS's robust objective).

The genotype is written as TOML, built with `bitfx.ir.cells.build`, captured, binarized,
trained, lowered to `custom` and run in the packed runtime (outputs checked against torch).
It is compared with random genotypes of the same space trained with the same budget (its rank
among them, 1 = best) and, under PGD, with a random one.

    python -m examples.search_digits --policy bnas|cp|anti_bandit [--quick] [--seeds N] [--out DIR] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from bitfx.backends.onnx import export
from bitfx.backends.packed import load as load_packed
from bitfx.ir import capture
from bitfx.ir.binary import get_scheme
from bitfx.ir.cells import build
from bitfx.ir.execution import compare_outputs
from bitfx.ir.table import format_table
from bitfx.passes import Pipeline
from bitfx.search import SearchState, make_policy, run
from bitfx.search.space import Genotype, Space
from bitfx.search.supernet import Supernet, SupernetEvaluator, binarize_supernet
from bitfx.train import PGD, AdversarialLoss, robust_accuracy
from bitfx.zoo import digits
from examples.training import accuracy, train_epochs

SPACES = {
    "darts": ("max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "dil_conv_3x3", "conv_3x3"),
    "abandit": ("max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "conv_3x3", "gab_filt_3x3"),
}
PACKED_RTOL = 1e-4
QUICK = {"warmup": 200, "epochs": 4, "random": 3, "final_channels": 8, "pgd_steps": 3, "search_pgd_steps": 2}


def search(args: argparse.Namespace, space: Space, train: list, valid: list, seed: int) -> tuple[Genotype, dict]:
    """Run one search; returns the genotype and its cost (samples, seconds)."""
    torch.manual_seed(seed)
    scheme = get_scheme(args.scheme)
    child = Supernet(space, args.channels, args.layers, in_channels=1, partial=args.partial)
    binarize_supernet(child, scheme)
    parent = None  # CP-NAS's float parent: the same supernet without binarization
    if args.policy == "cp":
        parent = Supernet(space, args.channels, args.layers, in_channels=1, partial=args.partial)
    attack = PGD(args.epsilon, steps=args.search_pgd_steps, seed=seed) if args.policy == "anti_bandit" else None
    evaluator = SupernetEvaluator(
        child,
        train,
        valid,
        steps=args.steps,
        lr=args.search_lr,
        parent=parent,
        attack=attack,
    )
    start = time.thread_time()
    evaluator.warm_up(args.warmup, seed=seed)
    policy = make_policy({"name": args.policy})
    state = SearchState.start(space.edges(), policy, seed=seed)
    operations = len(space.ops)
    total = sum(k * policy.rounds_t for k in range(2, operations + 1)) + (
        operations if args.policy == "anti_bandit" else 0
    )
    state_path = Path(args.out) / f"{args.policy}_seed{seed}_state.json"
    with tqdm(total=total, desc=f"search {args.policy} seed {seed}", unit="sample", leave=False) as bar:

        def on_step(current: SearchState, removed: dict[str, str]) -> None:
            bar.update(1)
            state_path.write_text(json.dumps(current.to_dict()))

        choice = run(state, evaluator, on_step)
    cost = {"samples": evaluator.samples, "warmup_steps": args.warmup, "cpu_seconds": time.thread_time() - start}
    return space.genotype(choice), cost


def train_binary(args: argparse.Namespace, genotype: Genotype, train: list, seed: int, attack: PGD | None = None):
    """Build, capture, binarize and train a genotype; returns the binary GraphModule."""
    torch.manual_seed(seed)
    model = build(genotype, args.final_channels, args.layers, in_channels=1)
    spec = ("fold_gabor," if "gab_filt_3x3" in genotype.ops() else "") + f"binarize(scheme={args.scheme})"
    binary = Pipeline.from_spec(spec).run(capture(model, train[0][0])).graph_module
    loss = (
        AdversarialLoss(binary, attack, clean_weight=0.5)
        if attack
        else (lambda images, labels: F.cross_entropy(binary(images), labels))
    )
    optimizer = torch.optim.Adam(binary.parameters(), lr=args.lr)
    train_epochs(binary, train, loss, optimizer, epochs=args.epochs, desc="train binary")
    return binary


def packed_error(binary, images: torch.Tensor) -> float:
    """Max relative error of the packed runtime against torch on `images` (custom lowering)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = export(binary, images, Path(tmp) / "searched.onnx", lowering="custom")
        actual = load_packed(path).run([images.numpy()])
    with torch.no_grad():
        expected = binary(images)
    return max(error.max_rel_error for error in compare_outputs(expected, actual))


def one_seed(args: argparse.Namespace, space: Space, seed: int) -> dict:
    data = digits((1, 1, 8, 8), split="train", seed=seed)
    cut = int(len(data) * 0.8)
    search_train, search_valid = data[:cut], data[cut:]
    test = digits((1, 1, 8, 8), split="test")
    genotype, cost = search(args, space, search_train, search_valid, seed)
    genotype.save(Path(args.out) / f"{args.policy}_seed{seed}.toml")
    searched = train_binary(args, genotype, data, seed)
    error = packed_error(searched, test[0][0])
    if not error <= PACKED_RTOL:
        raise SystemExit(f"packed runtime differs from torch: max rel error {error:.3g} > {PACKED_RTOL:g}")
    rng = random.Random(1000 + seed)
    randoms = [space.genotype({e: rng.choice(ops) for e, ops in space.edges().items()}) for _ in range(args.random)]
    random_accuracies = [
        accuracy(train_binary(args, g, data, seed), test) for g in tqdm(randoms, desc="random", leave=False)
    ]
    searched_accuracy = accuracy(searched, test)
    row = {
        "seed": seed,
        "genotype": genotype.to_data(),
        "cost": cost,
        "searched_accuracy": searched_accuracy,
        "random_accuracies": random_accuracies,
        "rank": 1 + sum(a > searched_accuracy for a in random_accuracies),
        "packed_max_rel_error": error,
    }
    if args.policy == "anti_bandit":
        attack = PGD(args.epsilon, steps=args.pgd_steps, seed=seed)
        training_attack = PGD(args.epsilon, steps=args.search_pgd_steps, seed=seed)
        robust = [train_binary(args, g, data, seed, training_attack) for g in (genotype, randoms[0])]
        row["pgd"] = {
            "epsilon": args.epsilon,
            "steps": args.pgd_steps,
            "searched": {"clean": accuracy(robust[0], test), "pgd": robust_accuracy(robust[0], test, attack)},
            "random": {"clean": accuracy(robust[1], test), "pgd": robust_accuracy(robust[1], test, attack)},
        }
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", choices=("bnas", "cp", "anti_bandit"), required=True)
    parser.add_argument(
        "--quick", action="store_true", help=f"a smaller budget, a few minutes on two cores (defaults {QUICK})"
    )
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--scheme", default="xnor", help="binarization scheme of the supernet and the final networks")
    parser.add_argument("--channels", type=int, default=8, help="supernet initial channels")
    parser.add_argument("--final-channels", type=int, default=16, help="initial channels of the trained networks")
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--nodes", type=int, default=2, help="intermediate nodes per cell")
    parser.add_argument("--partial", type=int, default=1, help="partial channels: 1/k of an edge's channels")
    parser.add_argument("--warmup", type=int, default=400, help="supernet batches on random sub-networks first")
    parser.add_argument("--steps", type=int, default=4, help="training batches per bandit sample")
    parser.add_argument("--epochs", type=int, default=8, help="training epochs of every final network")
    parser.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate of the final networks")
    parser.add_argument("--search-lr", type=float, default=1e-2, help="Adam learning rate of the supernet")
    parser.add_argument("--random", type=int, default=8, help="random genotypes to rank the searched one against")
    parser.add_argument("--epsilon", type=float, default=0.1, help="PGD L∞ radius (pixels are in [-1, 1])")
    parser.add_argument("--pgd-steps", type=int, default=7, help="PGD steps of the robustness evaluation")
    parser.add_argument(
        "--search-pgd-steps", type=int, default=3, help="PGD steps of adversarial training (search and final networks)"
    )
    parser.add_argument("--out", default="search_out", help="directory for genotypes and search states")
    parser.add_argument("--json", help="write the results here")
    if parser.parse_known_args()[0].quick:
        parser.set_defaults(**QUICK)
    args = parser.parse_args()
    torch.set_num_threads(1)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    space = Space(ops=SPACES["abandit" if args.policy == "anti_bandit" else "darts"], nodes=args.nodes)
    rows = []
    for seed in range(args.seeds):
        rows.append(one_seed(args, space, seed))
        if args.json:  # after every seed, so that a long run keeps what it measured
            Path(args.json).write_text(json.dumps({"args": vars(args), "results": rows}, indent=1) + "\n")

    print(f"policy {args.policy}, scheme {args.scheme}, space {list(space.ops)}, load average {os.getloadavg()}")
    print(format_table(
        ("seed", "searched acc", f"random acc (n={args.random})", "rank", "samples", "search CPU s", "packed err"),
        [
            (
                r["seed"],
                f"{r['searched_accuracy']:.1%}",
                " ".join(f"{a:.1%}" for a in r["random_accuracies"]),
                f"{r['rank']}/{args.random + 1}",
                r["cost"]["samples"],
                f"{r['cost']['cpu_seconds']:.0f}",
                f"{r['packed_max_rel_error']:.1e}",
            )
            for r in rows
        ],
        (False, True, False, True, True, True, True),
    ))  # fmt: skip
    if args.policy == "anti_bandit":
        print(
            f"\nPGD (ε={args.epsilon}, {args.pgd_steps} steps), both trained with the same budget on "
            f"PGD-{args.search_pgd_steps} examples mixed 1:1 with clean ones"
        )
        print(format_table(
            ("seed", "searched clean", "searched PGD", "random clean", "random PGD"),
            [
                (r["seed"], *(f"{r['pgd'][k][m]:.1%}" for k in ("searched", "random") for m in ("clean", "pgd")))
                for r in rows
            ],
            (False, True, True, True, True),
        ))  # fmt: skip


if __name__ == "__main__":
    main()
