"""Size-stratified detection metrics as the TinyPerson benchmark defines them: AP and miss rate.

Tiny objects are judged per size band of s = √(w·h) (bounds inclusive for ground truth):

    AP bands:  all [1, 1e5], tiny [1, 20], tiny1 [1, 8], tiny2 [8, 12], tiny3 [12, 20],
               small [20, 32], reasonable [32, 1e5]
    MR bands:  tiny1 [2, 8], tiny2 [8, 12], tiny3 [12, 20], tiny [2, 20], small [20, 32], all

at IoU 0.25, 0.5 and 0.75, keeping the 200 highest-scoring detections per image for AP (1000 for MR).

Ground truth carries three flags. `ignore` marks regions that are not scored (crowds, ambiguous
people, reflections); `uncertain` marks boxes that are ignored when `ignore_uncertain` (the
benchmark's setting); `crowd` marks COCO-style crowd boxes, compared by IoD instead of IoU and
matchable any number of times. A ground truth outside the size band is ignored too.

AP matching (per image, per IoU threshold t), the COCO greedy rule extended by IoD:
  1. detections by descending score (stable), at most `max_dets`; ground truth regular-first;
  2. each detection takes the unmatched (or crowd) ground truth of highest IoU ≥ t, preferring any
     regular one over an ignored one;
  3. a detection left unmatched may still fall on an ignored ground truth: if its highest IoD with
     one is ≥ t it is matched to it (any number of detections may share it);
  4. a detection matched to an ignored ground truth is ignored (neither TP nor FP); so is an
     unmatched detection whose own size lies outside the band.
AP is COCO's: precision made non-increasing from the right, read at the 101 recall points
0, 0.01, …, 1 (first detection reaching each recall, 0 beyond the last), averaged.

MR matching follows the CityPersons miss-rate script as adapted by the benchmark: detections whose
size is outside [lo / 1.25, hi · 1.25) are dropped; ignored ground truth is compared by IoD; the
first ignored ground truth reaching the best overlap wins; a detection left unmatched is ignored
when its IoD with an ignored ground truth exceeds 0.5. The miss rate is
exp(mean(log(1 − recall))) at the 9 FPPI points 10^−2 … 10^0 (log-spaced), FPPI = FP / images.
Two deliberate differences from that script, both where it misreads its own arrays: the IoD of
the fallback is the exact |d ∩ g| / |d| (the script feeds the already-IoD crowd overlap through
the IoU → IoD formula), and an FPPI point reached before the first detection has recall 0 (the
script's index −1 wraps to the final recall).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from bitfx.eval.boxes import as_boxes, box_area, iod, iou

AP_SIZE_RANGES: dict[str, tuple[float, float]] = {
    "all": (1.0, 1e5),
    "tiny": (1.0, 20.0),
    "tiny1": (1.0, 8.0),
    "tiny2": (8.0, 12.0),
    "tiny3": (12.0, 20.0),
    "small": (20.0, 32.0),
    "reasonable": (32.0, 1e5),
}
MR_SIZE_RANGES: dict[str, tuple[float, float]] = {
    "tiny1": (2.0, 8.0),
    "tiny2": (8.0, 12.0),
    "tiny3": (12.0, 20.0),
    "tiny": (2.0, 20.0),
    "small": (20.0, 32.0),
    "all": (-1.0, 1e10),
}
IOU_THRESHOLDS: tuple[float, ...] = (0.25, 0.5, 0.75)
AP_MAX_DETS = 200
MR_MAX_DETS = 1000
RECALL_POINTS = np.linspace(0.0, 1.0, 101)
# 9 points log-spaced from 10^-2 to 10^0, computed as the benchmark does (exp of a log-step arange)
FPPI_POINTS = np.exp(np.arange(np.log(0.01), np.log(1.0) + 1e-10, np.log(100.0) / 8))
MR_SIZE_MARGIN = 1.25
MR_IOD_FALLBACK = 0.5


@dataclass
class GroundTruth:
    """The annotated boxes of one image, (x, y, w, h), with their per-box flags."""

    boxes: np.ndarray
    ignore: np.ndarray | None = None
    uncertain: np.ndarray | None = None
    crowd: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.boxes = as_boxes(self.boxes)
        n = len(self.boxes)
        for name in ("ignore", "uncertain", "crowd"):
            flags = getattr(self, name)
            flags = np.zeros(n, bool) if flags is None else np.asarray(flags, bool).reshape(-1)
            if len(flags) != n:
                raise ValueError(f"GroundTruth.{name} has {len(flags)} flags for {n} boxes")
            setattr(self, name, flags)


@dataclass
class Detections:
    """The detector's boxes (x, y, w, h) and confidence scores for one image."""

    boxes: np.ndarray
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def __post_init__(self) -> None:
        self.boxes = as_boxes(self.boxes)
        self.scores = np.asarray(self.scores, np.float64).reshape(-1)
        if len(self.scores) != len(self.boxes):
            raise ValueError(f"Detections: {len(self.scores)} scores for {len(self.boxes)} boxes")

    def top(self, max_dets: int) -> Detections:
        """The `max_dets` highest-scoring detections, by descending score (stable order on ties)."""
        order = np.argsort(-self.scores, kind="mergesort")[:max_dets]
        return Detections(self.boxes[order], self.scores[order])


@dataclass
class ImageMatch:
    """Outcome of matching one image at one IoU threshold: per detection (in score order)
    whether it matched a ground truth and whether it is ignored, and the regular ground-truth count."""

    scores: np.ndarray
    matched: np.ndarray
    ignored: np.ndarray
    num_regular: int


def _ignored_gt(gt: GroundTruth, size_range: tuple[float, float], ignore_uncertain: bool) -> np.ndarray:
    size = np.sqrt(box_area(gt.boxes))
    out_of_range = (size < size_range[0]) | (size > size_range[1])
    return gt.ignore | gt.crowd | out_of_range | (gt.uncertain & ignore_uncertain)


def match_ap(
    gt: GroundTruth,
    dets: Detections,
    size_range: tuple[float, float],
    iou_threshold: float,
    max_dets: int = AP_MAX_DETS,
    ignore_uncertain: bool = True,
    use_iod_for_ignore: bool = True,
) -> ImageMatch:
    """Match one image's detections for AP (rules 1–4 of the module docstring)."""
    dets = dets.top(max_dets)
    gt_ignored = _ignored_gt(gt, size_range, ignore_uncertain)
    order = np.argsort(gt_ignored, kind="mergesort")
    boxes, ignored, crowd = gt.boxes[order], gt_ignored[order], gt.crowd[order]
    overlaps = iou(dets.boxes, boxes, crowd)
    inside = iod(dets.boxes, boxes)
    threshold = min(iou_threshold, 1 - 1e-10)
    gt_taken = np.zeros(len(boxes), bool)
    matched = np.zeros(len(dets.boxes), bool)
    dt_ignored = np.zeros(len(dets.boxes), bool)
    for d in range(len(dets.boxes)):
        best, m = threshold, -1
        for g in range(len(boxes)):
            if gt_taken[g] and not crowd[g]:
                continue
            if m > -1 and not ignored[m] and ignored[g]:
                break
            if overlaps[d, g] < best:
                continue
            best, m = overlaps[d, g], g
        if m == -1 and use_iod_for_ignore and ignored.any():
            candidates = np.flatnonzero(ignored)
            k = candidates[np.argmax(inside[d, candidates])]
            m = k if inside[d, k] >= threshold else -1
        if m == -1:
            continue
        matched[d], dt_ignored[d], gt_taken[m] = True, ignored[m], True
    dt_size = np.sqrt(box_area(dets.boxes))
    outside = (dt_size < size_range[0]) | (dt_size > size_range[1])
    dt_ignored |= ~matched & outside
    return ImageMatch(dets.scores, matched, dt_ignored, int(np.count_nonzero(~ignored)))


def match_mr(
    gt: GroundTruth,
    dets: Detections,
    size_range: tuple[float, float],
    iou_threshold: float,
    max_dets: int = MR_MAX_DETS,
    ignore_uncertain: bool = True,
    use_iod_for_ignore: bool = True,
) -> ImageMatch:
    """Match one image's detections for the miss rate (the MR rules of the module docstring)."""
    dets = dets.top(max_dets)
    dt_size = np.sqrt(box_area(dets.boxes))
    keep = (dt_size >= size_range[0] / MR_SIZE_MARGIN) & (dt_size < size_range[1] * MR_SIZE_MARGIN)
    dets = Detections(dets.boxes[keep], dets.scores[keep])
    gt_ignored = _ignored_gt(gt, size_range, ignore_uncertain)
    order = np.argsort(gt_ignored, kind="mergesort")
    boxes, ignored = gt.boxes[order], gt_ignored[order]
    overlaps = iou(dets.boxes, boxes, ignored)
    inside = iod(dets.boxes, boxes)
    threshold = min(iou_threshold, 1 - 1e-10)
    gt_taken = np.zeros(len(boxes), bool)
    matched = np.zeros(len(dets.boxes), bool)
    dt_ignored = np.zeros(len(dets.boxes), bool)
    for d in range(len(dets.boxes)):
        best, m = threshold, -1
        for g in range(len(boxes)):
            if gt_taken[g]:
                continue
            if m > -1 and ignored[g]:
                break
            if overlaps[d, g] < best:
                continue
            best, m = overlaps[d, g], g
        if m == -1 and use_iod_for_ignore and ignored.any():
            candidates = np.flatnonzero(ignored)
            k = candidates[np.argmax(inside[d, candidates])]
            m = k if inside[d, k] > MR_IOD_FALLBACK else -1
        if m == -1:
            continue
        matched[d], dt_ignored[d] = True, ignored[m]
        gt_taken[m] = not ignored[m]
    return ImageMatch(dets.scores, matched, dt_ignored, int(np.count_nonzero(~ignored)))


def _cumulative(matches: Sequence[ImageMatch]) -> tuple[np.ndarray, np.ndarray, int]:
    """Cumulative TP and FP counts over all images' detections by descending score, and #regular GT."""
    scores = np.concatenate([m.scores for m in matches]) if matches else np.zeros(0)
    order = np.argsort(-scores, kind="mergesort")
    matched = np.concatenate([m.matched for m in matches])[order] if matches else np.zeros(0, bool)
    ignored = np.concatenate([m.ignored for m in matches])[order] if matches else np.zeros(0, bool)
    tp = np.cumsum(matched & ~ignored).astype(np.float64)
    fp = np.cumsum(~matched & ~ignored).astype(np.float64)
    return tp, fp, sum(m.num_regular for m in matches)


def ap_from_matches(matches: Sequence[ImageMatch]) -> float:
    """COCO 101-point interpolated AP over the images' matches; NaN when there is no regular GT."""
    tp, fp, num_regular = _cumulative(matches)
    if num_regular == 0:
        return float("nan")
    recall = tp / num_regular
    precision = tp / (tp + fp + np.spacing(1))
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    idx = np.searchsorted(recall, RECALL_POINTS, side="left")
    q = np.zeros(len(RECALL_POINTS))
    valid = idx < len(precision)
    q[valid] = precision[idx[valid]]
    return float(q.mean())


def mr_from_matches(matches: Sequence[ImageMatch], num_images: int) -> float:
    """Log-average miss rate over the FPPI points 10^−2 … 10^0; NaN when there is no regular GT."""
    tp, fp, num_regular = _cumulative(matches)
    if num_regular == 0:
        return float("nan")
    recall = tp / num_regular
    fppi = fp / num_images
    idx = np.searchsorted(fppi, FPPI_POINTS, side="right") - 1
    reached = np.where(idx >= 0, recall[np.clip(idx, 0, None)] if len(recall) else 0.0, 0.0)
    with np.errstate(divide="ignore"):
        return float(np.exp(np.mean(np.log(1.0 - reached))))


def _match_images(
    match: Callable[..., ImageMatch],
    size_ranges: dict[str, tuple[float, float]],
    size: str,
    gts: Sequence[GroundTruth],
    dets: Sequence[Detections],
    *rules: float | int | bool,
) -> list[ImageMatch]:
    """`match` (match_ap or match_mr) applied to every image pair in the size band `size_ranges[size]`."""
    if len(gts) != len(dets):
        raise ValueError(f"{len(gts)} ground-truth images but {len(dets)} detection images; pass one of each per image")
    band = size_ranges[size]
    return [match(g, d, band, *rules) for g, d in zip(gts, dets)]


def average_precision(
    gts: Sequence[GroundTruth],
    dets: Sequence[Detections],
    size: str = "tiny",
    iou_threshold: float = 0.5,
    max_dets: int = AP_MAX_DETS,
    ignore_uncertain: bool = True,
    use_iod_for_ignore: bool = True,
) -> float:
    """AP of `dets` against `gts` (one entry per image) in the AP size band `size` at one IoU."""
    rules = (iou_threshold, max_dets, ignore_uncertain, use_iod_for_ignore)
    return ap_from_matches(_match_images(match_ap, AP_SIZE_RANGES, size, gts, dets, *rules))


def miss_rate(
    gts: Sequence[GroundTruth],
    dets: Sequence[Detections],
    size: str = "tiny",
    iou_threshold: float = 0.5,
    max_dets: int = MR_MAX_DETS,
    ignore_uncertain: bool = True,
    use_iod_for_ignore: bool = True,
) -> float:
    """Log-average miss rate of `dets` against `gts` in the MR size band `size` at one IoU."""
    rules = (iou_threshold, max_dets, ignore_uncertain, use_iod_for_ignore)
    return mr_from_matches(_match_images(match_mr, MR_SIZE_RANGES, size, gts, dets, *rules), len(gts))


def tiny_benchmark(
    gts: Sequence[GroundTruth],
    dets: Sequence[Detections],
    sizes: Sequence[str] = ("tiny", "tiny1", "tiny2", "tiny3", "small"),
    iou_thresholds: Sequence[float] = IOU_THRESHOLDS,
) -> dict[str, float]:
    """The benchmark's table: "AP50_tiny", "MR50_tiny", … for every size band and IoU (values in [0, 1])."""
    table = {}
    for t in iou_thresholds:
        for size in sizes:
            table[f"AP{round(t * 100)}_{size}"] = average_precision(gts, dets, size, t)
            table[f"MR{round(t * 100)}_{size}"] = miss_rate(gts, dets, size, t)
    return table
