"""`bitfx verify FILE MODEL`: run an ONNX file and its torch model on the same input and compare,
with the check of the lowering style recorded in the file."""

from __future__ import annotations

import argparse

from bitfx.backends.onnx import load_model, lowering_of, verifier_for
from bitfx.backends.onnx.lowerings import get_lowering
from bitfx.cli.reference import add_model_arguments, rewritten_model
from bitfx.errors import ModelSpecError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="the ONNX file (written by bitfx compile or bitfx.backends.onnx.export)")
    add_model_arguments(parser, model_flag=False)
    parser.add_argument(
        "--passes", help="the pass list compile ran, replayed on MODEL (not needed for a bitfx.save file)"
    )
    parser.add_argument(
        "--lowering", help="the file's lowering style, only for a file without bitfx metadata (default: read from it)"
    )
    parser.add_argument("--rtol", type=float, default=1e-4, help="tolerance on the max relative error (default 1e-4)")


def run(args: argparse.Namespace) -> int:
    style = lowering_of(load_model(args.file))
    if style is None and args.lowering is None:
        raise ModelSpecError(f"{args.file!r} does not record its lowering style; pass --lowering")
    if style is not None and args.lowering is not None and args.lowering != style:
        raise ModelSpecError(f"{args.file!r} was written by the {style!r} lowering, not {args.lowering!r}")
    style = style or args.lowering
    get_lowering(style)
    gm, example = rewritten_model(args, args.passes)
    check = verifier_for(style)(args.file, gm, example, rtol=args.rtol)
    print(f"verify ({style} lowering): {check.describe()}")
    return 0 if check.ok else 1
