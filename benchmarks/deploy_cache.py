"""What does caching the deployed form of binary layers save in an eval-mode accuracy loop?

A binarized ResNet-20 (`fuse_bn,binarize`) classifies the test split of the bundled digits in
eval mode under `torch.no_grad`, as every accuracy loop and numerical check does. "cached" is
the model as it is; "rebuilt" puts only the binary layers in training mode, where they build
their deployed form on every forward (the behaviour before the cache) while every other layer
stays in eval mode. Both compute the same predictions (checked). CPU time of the calling thread
(`time.thread_time`, one torch thread) per loop, median over alternating rounds so that the load
of a shared machine falls on both alike; the load average is printed before and after.

    python benchmarks/deploy_cache.py [--scheme reactnet] [--batch-size 64] [--rounds 7] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
from torch import nn

from bitfx import zoo
from bitfx.ir import capture
from bitfx.ir.binary import BinaryLayer
from bitfx.passes import Pipeline


def accuracy_loop(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Top-1 accuracy of `model` on `batches`, without gradients."""
    with torch.no_grad():
        correct = sum(int((model(images).argmax(dim=1) == labels).sum()) for images, labels in batches)
    return correct / sum(len(labels) for _, labels in batches)


def binary_layers_rebuild(model: nn.Module, rebuild: bool) -> None:
    """Put the binary layers of `model` in training mode (rebuild every forward) or eval mode (cache)."""
    for module in model.modules():
        if isinstance(module, BinaryLayer):
            module.train(rebuild)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scheme", default="reactnet")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()

    torch.set_num_threads(1)
    torch.manual_seed(0)
    batches = zoo.digits((1, 3, 32, 32), split="test", batch_size=args.batch_size)
    model = zoo.resnet20().eval()
    binary = Pipeline.from_spec(f"fuse_bn,binarize(scheme={args.scheme})").run(capture(model, batches[0][0][:8]))
    gm = binary.graph_module.eval()
    load_before = os.getloadavg()
    samples: dict[str, list[float]] = {"cached": [], "rebuilt": []}
    accuracies = {}
    for _ in range(args.rounds):
        for label in samples:
            binary_layers_rebuild(gm, rebuild=label == "rebuilt")
            start = time.thread_time()
            accuracies[label] = accuracy_loop(gm, batches)
            samples[label].append(time.thread_time() - start)
    if accuracies["cached"] != accuracies["rebuilt"]:
        raise AssertionError(f"cached and rebuilt forms disagree: {accuracies}")
    medians = {label: statistics.median(values) for label, values in samples.items()}
    result = {
        "scheme": args.scheme,
        "images": sum(len(labels) for _, labels in batches),
        "batch_size": args.batch_size,
        "rounds": args.rounds,
        "cpu_seconds_cached": medians["cached"],
        "cpu_seconds_rebuilt": medians["rebuilt"],
        "speedup": medians["rebuilt"] / medians["cached"],
        "accuracy": accuracies["cached"],
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
    }
    print(f"Binarized ResNet-20 ({args.scheme}), accuracy loop, {result['images']} digits, batch {args.batch_size}")
    print(f"  rebuilt every forward: {medians['rebuilt']:.3f} s CPU (median of {args.rounds})")
    print(f"  cached in eval mode:   {medians['cached']:.3f} s CPU")
    print(f"  speedup: {result['speedup']:.2f}x")
    print(f"  load average before {load_before}, after {result['load_average_after']}")
    if args.json:
        with open(args.json, "w") as file:
            json.dump(result, file, indent=2)


if __name__ == "__main__":
    main()
