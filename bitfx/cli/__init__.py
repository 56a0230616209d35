"""The `bitfx` command: `compile`, `inspect` and `passes`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from bitfx.cli import compile as compile_command
from bitfx.cli import inspect as inspect_command
from bitfx.cli.failures import EXIT_FAILED, one_line, report_failure


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns 0 on success, 1 when verification failed, 2 on any other failure (see `failures`)."""
    parser = _Parser(prog="bitfx", description="Compress PyTorch models with graph passes and lower them to ONNX.")
    commands = parser.add_subparsers(dest="command", required=True)
    compile_command.add_arguments(
        commands.add_parser("compile", help="run a pass pipeline on a model and write an ONNX file")
    )
    inspect_command.add_arguments(
        commands.add_parser("inspect", help="print the per-layer table of a model or ONNX file")
    )
    commands.add_parser("passes", help="list the registered passes and their parameters")
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # --help, or a usage error already printed as one line
        return int(done.code or 0)
    try:
        if args.command == "compile":
            return compile_command.run(args)
        if args.command == "inspect":
            return inspect_command.run(args)
        return _list_passes()
    except (Exception, KeyboardInterrupt) as error:
        return report_failure(error)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line, like every other failure."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_FAILED, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


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
