"""The model `verify`, `plan` and `benchmark` work on: a factory spec, its `--weights`, and
optionally the `--passes` that were run on it (deterministic passes replay exactly)."""

from __future__ import annotations

import argparse

import torch
from torch import fx

from bitfx.cli.specs import build_model, input_shape_of
from bitfx.cli.weights import WEIGHTS_HELP, read_weights
from bitfx.ir import capture, example_inputs_of
from bitfx.passes import Pipeline


def add_model_arguments(parser: argparse.ArgumentParser, *, model_flag: bool) -> None:
    """MODEL (positional, or `--model` when the command's first argument is a file), `--weights`, `--input-shape`."""
    if model_flag:
        parser.add_argument("--model", help="model factory as package.module:function, e.g. bitfx.zoo:resnet20")
    else:
        parser.add_argument("model", help="model factory as package.module:function, e.g. bitfx.zoo:resnet20")
    parser.add_argument("--weights", help=WEIGHTS_HELP)
    parser.add_argument("--input-shape", help="N,C,H,W of the example input (default: the model's example_input_shape)")


def captured_model(args: argparse.Namespace) -> tuple[fx.GraphModule, tuple[torch.Tensor, ...]]:
    """The captured (or checkpointed) model in eval mode and its example inputs."""
    model = build_model(args.model)
    trained = read_weights(args.weights, model, args.model) if args.weights else None
    if trained is not None:
        return trained, example_inputs_of(trained)
    shape = input_shape_of(model, args.input_shape, args.model)
    example = (torch.randn(shape, generator=torch.Generator().manual_seed(0)),)
    return capture(model.eval(), example), example


def rewritten_model(args: argparse.Namespace, passes: str | None) -> tuple[fx.GraphModule, tuple[torch.Tensor, ...]]:
    """`captured_model` with the pass list `passes` run on it (None: as it is)."""
    gm, example = captured_model(args)
    if passes:
        gm = Pipeline.from_spec(passes).run(gm).graph_module.eval()
    return gm, example
