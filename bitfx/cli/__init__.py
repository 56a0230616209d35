"""The `bitfx` command: `compile`, `inspect` and `passes`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from bitfx.cli import compile as compile_command
from bitfx.cli import inspect as inspect_command
from bitfx.errors import BitfxError


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns 0 on success, 1 when verification failed, 2 on bad input."""
    parser = argparse.ArgumentParser(
        prog="bitfx", description="Compress PyTorch models with graph passes and lower them to ONNX."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    compile_command.add_arguments(
        commands.add_parser("compile", help="run a pass pipeline on a model and write an ONNX file")
    )
    inspect_command.add_arguments(
        commands.add_parser("inspect", help="print the per-layer table of a model or ONNX file")
    )
    commands.add_parser("passes", help="list the registered passes and their parameters")
    args = parser.parse_args(argv)
    try:
        if args.command == "compile":
            return compile_command.run(args)
        if args.command == "inspect":
            return inspect_command.run(args)
        return _list_passes()
    except BitfxError as error:
        print(f"bitfx: error: {error}", file=sys.stderr)
        return 2


def _list_passes() -> int:
    import dataclasses

    from bitfx.passes import available_passes

    for name, cls in available_passes().items():
        params = ", ".join(
            f"{f.name}={f.default!r}" for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING
        )
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        print(f"{name}({params})  {doc}" if params else f"{name}  {doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
