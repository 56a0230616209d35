"""The `bitfx` command: `compile`, `inspect`, `verify`, `plan`, `benchmark` and `passes`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

import bitfx
from bitfx.cli import benchmark as benchmark_command
from bitfx.cli import compile as compile_command
from bitfx.cli import inspect as inspect_command
from bitfx.cli import plan as plan_command
from bitfx.cli import verify as verify_command
from bitfx.cli.catalog import lowerings_text, passes_text
from bitfx.cli.failures import EXIT_FAILED, one_line, report_failure
from bitfx.cli.specs import import_from_cwd

_COMMANDS = {
    "compile": compile_command,
    "inspect": inspect_command,
    "verify": verify_command,
    "plan": plan_command,
    "benchmark": benchmark_command,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns 0 on success, 1 when verification failed, 2 on any other failure (see `failures`)."""
    parser = _Parser(prog="bitfx", description="Compress PyTorch models with graph passes and lower them to ONNX.")
    parser.add_argument("--version", action="version", version=f"bitfx {bitfx.__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    compile_command.add_arguments(
        commands.add_parser(
            "compile",
            help="run a pass pipeline on a model and write an ONNX file",
            epilog=f"lowering styles:\n{lowerings_text()}\n\npasses:\n{passes_text()}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )
    inspect_command.add_arguments(
        commands.add_parser("inspect", help="print the per-layer table of a model or ONNX file")
    )
    verify_command.add_arguments(
        commands.add_parser("verify", help="compare an ONNX file with its torch model (the check of its lowering)")
    )
    plan_command.add_arguments(commands.add_parser("plan", help="print the dry run of a pruning pass"))
    benchmark_command.add_arguments(
        commands.add_parser("benchmark", help="time an ONNX file in onnxruntime and the packed runtime")
    )
    commands.add_parser("passes", help="list the registered passes, their parameters and the lowering styles")
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # --help, --version, or a usage error already printed as one line
        return int(done.code or 0)
    import_from_cwd()
    try:
        if args.command in _COMMANDS:
            return _COMMANDS[args.command].run(args)
        return _list_passes()
    except (Exception, KeyboardInterrupt) as error:
        return report_failure(error)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line, like every other failure."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_FAILED, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def _list_passes() -> int:
    print(passes_text())
    print(f"\nlowering styles (--lowering):\n{lowerings_text()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
