"""`bitfx inspect`: the summary table of a model spec or an ONNX file."""

from __future__ import annotations

import argparse

import torch

from bitfx.backends.onnx import load_model, onnx_summary, op_counts
from bitfx.cli.specs import build_model, input_shape_of
from bitfx.cli.weights import WEIGHTS_HELP, read_weights
from bitfx.ir import capture, summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", help="a model spec (package.module:function) or an .onnx file")
    parser.add_argument("--input-shape", help="N,C,H,W for a model spec (default: the model's example_input_shape)")
    parser.add_argument("--weights", help=WEIGHTS_HELP)


def run(args: argparse.Namespace) -> int:
    if args.target.endswith(".onnx") or ":" not in args.target:
        model = load_model(args.target)
        print(onnx_summary(model))
        print("ops: " + ", ".join(f"{op}×{count}" for op, count in op_counts(model).items()))
        return 0
    model = build_model(args.target)
    trained = read_weights(args.weights, model, args.target) if args.weights else None
    shape = input_shape_of(model, args.input_shape, args.target)
    print(summary(trained if trained is not None else capture(model, (torch.zeros(shape),))))
    return 0
