"""Summaries over the seeds of an experiment, as the examples' tables print them."""

from __future__ import annotations

import statistics


def mean_std(values: list[float], scale: float = 1.0, digits: int = 2) -> str:
    """'mean ± sample standard deviation' of `values` times `scale` (± 0 for a single value)."""
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{scale * statistics.fmean(values):.{digits}f} ± {scale * spread:.{digits}f}"
