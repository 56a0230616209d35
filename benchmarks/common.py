"""What the benchmark scripts share: the timing helpers of `examples.timing`."""

from examples.timing import median_ms, timed

__all__ = ["median_ms", "timed"]
