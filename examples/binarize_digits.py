"""Does a binarized CNN learn? Float vs 1-bit accuracy of every scheme on the bundled digits.

Trains the zoo's ResNet-20 in float on scikit-learn's handwritten digits (no download), then,
for each binarization scheme, starts from the same float weights, runs the `binarize` pass,
trains the binary network with the same budget and seed (Adam, cosine schedule, the
`bitfx.train` hooks, distillation from the float model unless `--no-distill`), and checks
the trained network in onnxruntime through the `custom` lowering.

    python -m examples.binarize_digits [--epochs 10] [--size 16] [--schemes bnn,xnor,...] [--threads 1] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from bitfx.backends.onnx import export, run_session, session
from bitfx.ir import capture
from bitfx.ir.binary import available_schemes, get_scheme
from bitfx.ir.table import format_table
from bitfx.passes import Pipeline
from bitfx.train import Distillation
from bitfx.zoo import digits, resnet20
from examples.training import accuracy, train_classifier, train_epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--epochs", type=int, default=10, help="epochs of float training, and of binary training per scheme"
    )
    parser.add_argument("--size", type=int, default=16, help="image side (the digits are 8×8, resized)")
    parser.add_argument("--schemes", default=",".join(available_schemes()))
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate of the binary training")
    parser.add_argument("--no-distill", action="store_true", help="train the binary networks on labels only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (one keeps a shared machine from thrashing)"
    )
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    shape = (1, 3, args.size, args.size)
    train, test = digits(shape, split="train", seed=args.seed), digits(shape, split="test")
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    float_model = train_classifier(resnet20(), train, epochs=args.epochs, seed=args.seed)
    float_seconds = time.perf_counter() - start
    teacher = capture(float_model, train[0][0][:8])
    float_accuracy = accuracy(teacher, test)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.schemes.split(","):
            torch.manual_seed(args.seed)
            student = Pipeline.from_spec(f"binarize(scheme={name})").run(teacher).graph_module
            if args.no_distill:
                loss_fn = lambda images, labels, student=student: nn.functional.cross_entropy(student(images), labels)  # noqa: E731
            else:
                loss_fn = Distillation(teacher, student, label_weight=1.0)
            start = time.perf_counter()
            train_epochs(
                student,
                train,
                loss_fn,
                torch.optim.Adam(student.parameters(), lr=args.lr),
                epochs=args.epochs,
                desc="train binary",
            )
            seconds = time.perf_counter() - start
            path = export(student, test[0][0][:8], Path(tmp) / f"{name}.onnx", lowering="custom")
            ort = session(path)
            rows.append({
                "scheme": name,
                "reference": get_scheme(name).reference,
                "float_accuracy": float_accuracy,
                "binary_accuracy": accuracy(student, test),
                "onnxruntime_custom_accuracy": accuracy(lambda x, ort=ort: run_session(ort, [x.numpy()])[0], test),
                "train_seconds": seconds,
            })  # fmt: skip

    teacher = "labels only" if args.no_distill else "distilled from the float model"
    print(
        f"ResNet-20 on digits at {args.size}×{args.size}, {args.epochs} epochs each "
        f"(float: SGD, {float_seconds:.0f} s; binary: Adam lr {args.lr}, {teacher}), seed {args.seed}, chance 10%\n"
    )
    percent = ("float_accuracy", "binary_accuracy", "onnxruntime_custom_accuracy")
    print(format_table(
        ("scheme", "float acc", "binary acc", "onnxruntime (custom) acc", "train s"),
        [(r["scheme"], *(f"{r[key]:.1%}" for key in percent), f"{r['train_seconds']:.0f}") for r in rows],
        (False, True, True, True, True),
    ))  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
