"""Box geometry for detection metrics: IoU and intersection-over-detection on (x, y, w, h) boxes.

Boxes are float arrays of shape (N, 4) in pixels, (x, y) the top-left corner, as in COCO-style
annotations. Widths are continuous (x2 = x + w, no "+1"), as pycocotools computes box IoU.

    IoU(d, g) = |d ∩ g| / (|d| + |g| − |d ∩ g|)
    IoD(d, g) = |d ∩ g| / |d|          (how much of the detection lies inside g)

IoD is what judges a detection against an *ignore region* (a crowd, a reflection): a small
detection inside a large region has a tiny IoU but an IoD near 1, and must not count as a false
positive. For box pairs the two are tied by IoD = IoU / (1 + IoU) · (1 + |g| / |d|).
"""

from __future__ import annotations

import numpy as np


def as_boxes(boxes: np.ndarray | list) -> np.ndarray:
    """`boxes` as a float64 (N, 4) array; raises if the shape is not (N, 4)."""
    array = np.asarray(boxes, dtype=np.float64)
    if array.size == 0:
        return array.reshape(0, 4)
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(f"boxes must have shape (N, 4) as (x, y, w, h); got {array.shape}")
    return array


def box_area(boxes: np.ndarray) -> np.ndarray:
    """Area w · h of each box (zero for degenerate boxes)."""
    return np.clip(boxes[:, 2], 0, None) * np.clip(boxes[:, 3], 0, None)


def intersection(dets: np.ndarray, gts: np.ndarray) -> np.ndarray:
    """(D, G) matrix of intersection areas |d ∩ g|."""
    x1 = np.maximum(dets[:, None, 0], gts[None, :, 0])
    y1 = np.maximum(dets[:, None, 1], gts[None, :, 1])
    x2 = np.minimum(dets[:, None, 0] + dets[:, None, 2], gts[None, :, 0] + gts[None, :, 2])
    y2 = np.minimum(dets[:, None, 1] + dets[:, None, 3], gts[None, :, 1] + gts[None, :, 3])
    return np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)


def iod(dets: np.ndarray, gts: np.ndarray) -> np.ndarray:
    """(D, G) intersection over detection area; 0 for a detection of zero area."""
    inter = intersection(dets, gts)
    area = box_area(dets)[:, None]
    return np.divide(inter, area, out=np.zeros_like(inter), where=area > 0)


def iou(dets: np.ndarray, gts: np.ndarray, crowd: np.ndarray | None = None) -> np.ndarray:
    """(D, G) IoU; columns of `crowd` ground truths use IoD instead (the COCO crowd rule)."""
    inter = intersection(dets, gts)
    union = box_area(dets)[:, None] + box_area(gts)[None, :] - inter
    out = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    if crowd is not None and np.any(crowd):
        out[:, crowd] = iod(dets, gts)[:, crowd]
    return out
