"""Metrics that judge compressed models (numpy only): size-stratified detection AP and miss rate."""

from bitfx.eval.detection import (
    AP_SIZE_RANGES,
    IOU_THRESHOLDS,
    MR_SIZE_RANGES,
    Detections,
    GroundTruth,
    average_precision,
    miss_rate,
    tiny_benchmark,
)

__all__ = [
    "AP_SIZE_RANGES",
    "IOU_THRESHOLDS",
    "MR_SIZE_RANGES",
    "Detections",
    "GroundTruth",
    "average_precision",
    "miss_rate",
    "tiny_benchmark",
]
