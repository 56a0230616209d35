"""`bitfx plan MODEL --passes ...`: the dry run of the first pass that offers one (`rank_prune`):
which channels it would remove and what the layers would cost, without writing anything."""

from __future__ import annotations

import argparse

from bitfx.cli.batches import DataBatches
from bitfx.cli.reference import add_model_arguments, captured_model
from bitfx.errors import ModelSpecError
from bitfx.passes import Pipeline


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser, model_flag=False)
    parser.add_argument("--passes", required=True, help="pass list, e.g. 'fuse_bn,rank_prune(rate=0.5)'")
    parser.add_argument("--data", help="data function package.module:function the pass calibrates on")


def run(args: argparse.Namespace) -> int:
    pipeline = Pipeline.from_spec(args.passes)
    planned = next((i for i, p in enumerate(pipeline.passes) if callable(getattr(p, "plan", None))), None)
    if planned is None:
        names = ", ".join(p.name for p in pipeline.passes)
        raise ModelSpecError(f"no pass in --passes ({names}) has a dry run; rank_prune does")
    gm, example = captured_model(args)
    data = DataBatches(args.data, tuple(example[0].shape)) if args.data else None
    if planned:
        gm = Pipeline(pipeline.passes[:planned]).run(gm, data=data).graph_module
        print(f"ran {', '.join(p.name for p in pipeline.passes[:planned])} first")
    target = pipeline.passes[planned]
    plan = target.plan(gm, data=data, example_inputs=example)
    print(f"dry run of {target.name} (nothing is changed):")
    print(plan)
    later = pipeline.passes[planned + 1 :]
    if later:
        print(f"not run (they follow the planned pass): {', '.join(p.name for p in later)}")
    return 0
