"""TinyPerson-style AP and miss rate, one branch at a time, on fixtures whose values are worked out by hand."""

import math

import numpy as np
import pytest

from bitfx.eval import Detections, GroundTruth, average_precision, miss_rate, tiny_benchmark
from bitfx.eval.boxes import iod, iou
from bitfx.eval.detection import FPPI_POINTS, match_ap, match_mr

TINY = (1.0, 20.0)


def box(x, y, w=10, h=10):
    return [x, y, w, h]


def test_iou_and_iod_by_hand():
    d = np.array([box(0, 0)], float)
    g = np.array([box(5, 0), box(0, 0, 100, 100)], float)
    # half of d overlaps the first box: 50 / (100 + 100 - 50); d lies wholly inside the second
    np.testing.assert_allclose(iou(d, g), [[50 / 150, 100 / 10000]])
    np.testing.assert_allclose(iod(d, g), [[0.5, 1.0]])
    np.testing.assert_allclose(iou(d, g, crowd=np.array([False, True])), [[50 / 150, 1.0]])
    # IoD = IoU / (1 + IoU) · (1 + |g| / |d|) for boxes
    u = iou(d, g)[0, 0]
    assert math.isclose(u / (1 + u) * (1 + 100 / 100), 0.5)


def test_a_match_is_a_true_positive():
    gt = GroundTruth([box(0, 0)])
    m = match_ap(gt, Detections([box(1, 0)], [0.9]), TINY, 0.5)
    assert m.matched.tolist() == [True] and m.ignored.tolist() == [False] and m.num_regular == 1
    assert average_precision([gt], [Detections([box(1, 0)], [0.9])]) == pytest.approx(1.0)
    # IoU 90/110 = 0.82 passes 0.75; a 5 px shift (IoU 1/3) passes 0.25 but not 0.5
    assert average_precision([gt], [Detections([box(5, 0)], [0.9])], iou_threshold=0.25) == pytest.approx(1.0)
    assert average_precision([gt], [Detections([box(5, 0)], [0.9])], iou_threshold=0.5) == 0.0


def test_regular_ground_truth_wins_over_a_better_overlapping_ignored_one():
    gt = GroundTruth([box(0, 0), box(3, 0)], ignore=[False, True])
    m = match_ap(gt, Detections([box(2, 0)], [0.9]), TINY, 0.5)
    assert m.matched.tolist() == [True] and m.ignored.tolist() == [False]


def test_a_duplicate_is_a_false_positive_and_ap_uses_the_precision_envelope():
    gt = GroundTruth([box(0, 0), box(50, 50)])
    dets = Detections([box(0, 0), box(1, 1), box(50, 50)], [0.9, 0.8, 0.7])
    m = match_ap(gt, dets, TINY, 0.5)
    assert m.matched.tolist() == [True, False, True]
    # recall .5 .5 1, precision 1 .5 2/3 -> envelope 1 2/3 2/3; 51 recall points ≤ .5 read 1, 50 read 2/3
    assert average_precision([gt], [dets]) == pytest.approx((51 + 50 * 2 / 3) / 101)


def test_ignore_region_matched_by_iod_is_not_a_false_positive():
    gt = GroundTruth([box(0, 0), box(200, 200, 100, 100)], ignore=[False, True])
    dets = Detections([box(250, 250), box(0, 0)], [0.95, 0.9])  # the top one lies inside the region
    m = match_ap(gt, dets, TINY, 0.5)
    assert m.matched.tolist() == [True, True] and m.ignored.tolist() == [True, False]
    assert average_precision([gt], [dets]) == pytest.approx(1.0)
    # without IoD it is a false positive (IoU 0.01): precision 0 then 1/2, envelope 1/2 everywhere
    assert average_precision([gt], [dets], use_iod_for_ignore=False) == pytest.approx(0.5)


def test_iod_is_compared_with_the_iou_threshold():
    gt = GroundTruth([box(0, 0), box(200, 200, 100, 100)], ignore=[False, True])
    dets = Detections([box(194, 250), box(0, 0)], [0.95, 0.9])  # 4 of its 10 columns inside: IoD 0.4
    assert match_ap(gt, dets, TINY, 0.25).ignored.tolist() == [True, False]
    assert match_ap(gt, dets, TINY, 0.5).ignored.tolist() == [False, False]


def test_out_of_range_ground_truth_and_detections_are_ignored():
    gt = GroundTruth([box(0, 0), box(100, 100, 40, 40)])
    dets = Detections([box(0, 0), box(100, 100, 40, 40), box(300, 300, 40, 40), box(400, 400)], [0.9, 0.8, 0.7, 0.6])
    tiny = match_ap(gt, dets, TINY, 0.5)
    assert tiny.num_regular == 1
    assert tiny.matched.tolist() == [True, True, False, False]
    assert tiny.ignored.tolist() == [False, True, True, False]  # 40 px: on ignored GT / outside band
    reasonable = match_ap(gt, dets, (32.0, 1e5), 0.5)
    assert reasonable.ignored.tolist() == [True, False, False, True]
    assert average_precision([gt], [dets], "tiny") == pytest.approx(1.0)
    assert average_precision([gt], [dets], "reasonable") == pytest.approx(1.0)
    assert math.isnan(average_precision([gt], [dets], "tiny1"))  # no regular GT of 1–8 px


def test_uncertain_boxes_are_ignorable():
    gt = GroundTruth([box(0, 0), box(50, 50)], uncertain=[False, True])
    dets = Detections([box(0, 0)], [0.9])
    assert average_precision([gt], [dets], ignore_uncertain=True) == pytest.approx(1.0)
    # counted: recall stops at 1/2, so 51 of the 101 recall points read precision 1
    assert average_precision([gt], [dets], ignore_uncertain=False) == pytest.approx(51 / 101)
    both = Detections([box(50, 50), box(0, 0)], [0.95, 0.9])
    assert match_ap(gt, both, TINY, 0.5).ignored.tolist() == [True, False]


def test_only_the_200_best_detections_per_image_count():
    gt = GroundTruth([box(0, 0)])
    far = [box(30 + 11 * (i % 20), 30 + 11 * (i // 20)) for i in range(200)]
    dets = Detections(far + [box(0, 0)], [0.99] * 200 + [0.5])
    assert average_precision([gt], [dets]) == 0.0
    assert average_precision([gt], [dets], max_dets=201) == pytest.approx(1 / 201)
    # the cut is per image: with the person on a second image of its own, it counts again
    two = [GroundTruth([box(0, 0)]), GroundTruth([box(0, 0)])]
    split = [Detections(far, [0.99] * 200), Detections([box(0, 0)], [0.5])]
    assert average_precision(two, split) == pytest.approx((51 * 1 / 201) / 101)


def test_crowd_ground_truth_absorbs_several_detections():
    gt = GroundTruth([box(0, 0), box(100, 100, 15, 15)], crowd=[False, True])
    dets = Detections([box(100, 100), box(105, 105), box(0, 0)], [0.9, 0.8, 0.7])
    m = match_ap(gt, dets, TINY, 0.5)
    assert m.matched.tolist() == [True, True, True] and m.ignored.tolist() == [True, True, False]


def test_miss_rate_at_the_fppi_points():
    np.testing.assert_allclose(FPPI_POINTS, np.logspace(-2, 0, 9))
    # 8 images, one 10 px person each; detections by score: T T T T F T T F F T  (image 7 missed)
    gts = [GroundTruth([box(0, 0)]) for _ in range(8)]
    pattern = "TTTTFTTFFT"
    dets = [([], []) for _ in range(8)]
    tp_image = 0
    for rank, kind in enumerate(pattern):
        score = 1.0 - 0.05 * rank
        image = tp_image if kind == "T" else rank % 8
        dets[image][0].append(box(0, 0) if kind == "T" else box(40, 40))
        dets[image][1].append(score)
        tp_image += kind == "T"
    dets = [Detections(b, s) for b, s in dets]
    # fppi 0 0 0 0 .125 .125 .125 .25 .375 .375; recall at the 9 points: .5 ×5, .75, .75, .875, .875
    # miss rates .5 ×5, .25 ×2, .125 ×2 -> geometric mean 2^(−(5 + 4 + 6)/9)
    assert miss_rate(gts, dets, "tiny", 0.5) == pytest.approx(2 ** (-15 / 9))


def test_miss_rate_before_the_first_detection_is_one():
    gts = [GroundTruth([box(0, 0)]), GroundTruth([box(0, 0)])]
    dets = [Detections([box(40, 40), box(0, 0)], [0.9, 0.8]), Detections(np.zeros((0, 4)), [])]
    # fppi .5 .5, recall 0 .5: the 7 points below .5 reach no detection (miss 1), the last two miss .5
    assert miss_rate(gts, dets, "tiny", 0.5) == pytest.approx(2 ** (-2 / 9))
    assert miss_rate(gts, [Detections(np.zeros((0, 4)), [])] * 2, "tiny", 0.5) == pytest.approx(1.0)


def test_miss_rate_drops_detections_far_outside_the_size_band():
    gt = GroundTruth([box(0, 0)])
    dets = Detections([box(100, 100, 30, 30), box(200, 200, 24, 24), box(0, 0)], [0.9, 0.8, 0.7])
    m = match_mr(gt, dets, (2.0, 20.0), 0.5)
    assert m.scores.tolist() == [0.8, 0.7]  # 30 ≥ 20 · 1.25 is dropped, 24 < 25 stays (and is an FP)
    assert m.matched.tolist() == [False, True] and m.ignored.tolist() == [False, False]


def test_miss_rate_ignore_regions_by_iod_and_the_half_fallback():
    gt = GroundTruth([box(0, 0), box(200, 200, 100, 100)], ignore=[False, True])
    inside = Detections([box(250, 250), box(194, 250), box(196, 250)], [0.9, 0.8, 0.7])  # IoD 1, .4, .6
    at_half = match_mr(gt, inside, (2.0, 20.0), 0.5)
    assert at_half.ignored.tolist() == [True, False, True]
    at_75 = match_mr(gt, inside, (2.0, 20.0), 0.75)  # IoD .6 < .75 but > .5: ignored by the fallback
    assert at_75.ignored.tolist() == [True, False, True]
    assert match_mr(gt, inside, (2.0, 20.0), 0.75, use_iod_for_ignore=False).ignored.tolist() == [True, False, False]


def test_tiny_benchmark_table_keys_and_mismatched_inputs():
    gts = [GroundTruth([box(0, 0, 6, 6), box(50, 50, 15, 15)])]
    dets = [Detections([box(0, 0, 6, 6), box(50, 50, 15, 15)], [0.9, 0.8])]
    table = tiny_benchmark(gts, dets)
    assert table["AP50_tiny"] == pytest.approx(1.0) and table["AP50_tiny1"] == pytest.approx(1.0)
    assert table["AP25_tiny3"] == pytest.approx(1.0)
    assert table["MR50_tiny"] == 0.0 and math.isnan(table["AP50_small"])
    with pytest.raises(ValueError, match="one of each per image"):
        average_precision(gts, dets * 2)
    with pytest.raises(ValueError, match="shape"):
        GroundTruth([1, 2, 3])
