"""How the `bitfx` command reports a failure: one line on stderr and an exit code.

Exit codes: 0 success, 1 the ONNX file does not match torch (verification), 2 anything else
that stopped the command (bad input, a failing model or data function, an unwritable output,
an unexpected error), 130 interrupted. `BITFX_TRACEBACK=1` also prints the traceback.
"""

from __future__ import annotations

import os
import sys
import traceback

from bitfx.errors import BitfxError

EXIT_OK = 0
EXIT_MISMATCH = 1
EXIT_FAILED = 2
EXIT_INTERRUPTED = 130


def one_line(text: str) -> str:
    """`text` with its lines joined, so a message is always a single line."""
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def report_failure(error: BaseException) -> int:
    """Print `error` as one `bitfx: ...` line on stderr and return the command's exit code."""
    if os.environ.get("BITFX_TRACEBACK"):
        traceback.print_exception(error, file=sys.stderr)
    if isinstance(error, KeyboardInterrupt):
        print("bitfx: interrupted; no output file was written or changed", file=sys.stderr)
        return EXIT_INTERRUPTED
    if isinstance(error, BitfxError):
        message = str(error)
    elif isinstance(error, OSError) and error.strerror:
        where = f" {error.filename!r}" if error.filename else ""
        message = f"cannot access{where}: {error.strerror}"
    else:
        message = (
            f"unexpected {type(error).__name__}: {error} (this is a bug in bitfx; "
            "run again with BITFX_TRACEBACK=1 to see where it happened)"
        )
    print(f"bitfx: error: {one_line(message)}", file=sys.stderr)
    return EXIT_FAILED
