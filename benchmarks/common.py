"""What the benchmark scripts share: the timing helpers of `examples.timing`.

Benchmarks run as `python benchmarks/NAME.py`, which puts `benchmarks/` on the module path
but not the repository root, and `examples/` is not installed: importing this module adds
the root so that the scripts can use `examples.*`. Import it before any `examples` module.
"""

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parent.parent)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from examples.timing import median_ms, timed  # after ROOT is on the path

__all__ = ["median_ms", "timed"]
