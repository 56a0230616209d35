"""Scale match and monotone scale match, judged by the size distributions they produce."""

import numpy as np
import pytest

from bitfx.eval.scale_match import (
    MonotoneScaleMatch,
    ScaleMatch,
    box_sizes,
    resize_bilinear,
    sample_size,
    size_distribution,
)


def ks_distance(a, b) -> float:
    """Largest gap between the two empirical CDFs."""
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    cdf_a, cdf_b = np.searchsorted(a, grid, "right") / len(a), np.searchsorted(b, grid, "right") / len(b)
    return float(np.max(np.abs(cdf_a - cdf_b)))


def tiny_sizes(n, seed=0):
    """A TinyPerson-like target: log-normal sizes around 12 px."""
    return np.exp(np.random.default_rng(seed).normal(np.log(12), 0.5, n))


def one_box_images(sizes, side=256):
    """One square box per (blank) image, so the image's mean box size is the box size."""
    return [(np.zeros((side, side), np.uint8), np.array([[10.0, 10.0, s, s]])) for s in sizes]


def test_histogram_tails_hold_one_bin_of_mass_each():
    sizes = tiny_sizes(10_000)
    dist = size_distribution(sizes, bins=100)
    assert len(dist.edges) == 101 and len(dist.mass) == 100
    assert dist.mass.sum() == pytest.approx(1.0)
    assert dist.mass[0] == pytest.approx(0.01) and dist.mass[-1] == pytest.approx(0.01)
    assert dist.edges[0] == sizes.min() and dist.edges[-1] == sizes.max()
    assert np.all(np.diff(dist.edges) >= 0)


def test_sampling_reproduces_the_target_distribution():
    target = tiny_sizes(20_000)
    dist = size_distribution(target)
    rng = np.random.default_rng(1)
    samples = np.array([sample_size(dist, rng) for _ in range(5000)])
    assert ks_distance(samples, target) < 0.03


def test_scale_match_moves_source_sizes_onto_the_target():
    target = tiny_sizes(20_000)
    source = np.random.default_rng(2).uniform(30, 120, 1000)
    sm = ScaleMatch(target=size_distribution(target), scale_range=(0.0, 2.0))
    rng = np.random.default_rng(3)
    out = np.concatenate([box_sizes(sm(image, boxes, rng)[1]) for image, boxes in one_box_images(source)])
    assert ks_distance(source, target) > 0.95
    assert ks_distance(out, target) < 0.06  # sampling noise of 1000 draws plus 2 px drops and rounding


def test_monotone_scale_match_keeps_order_and_matches_quantiles():
    target = tiny_sizes(20_000)
    source = np.random.default_rng(4).uniform(30, 120, 2000)
    msm = MonotoneScaleMatch(source_sizes=source, target=size_distribution(target))
    mapped = np.array([msm.match_size(s) for s in source])
    order = np.argsort(source)
    assert np.all(np.diff(mapped[order]) >= -1e-9)
    assert ks_distance(mapped, target) < 0.02  # exact up to binning: no sampling involved
    for (image, boxes), want in zip(one_box_images(source[:300]), mapped[:300]):
        out_image, out_boxes = msm(image, boxes)
        side = out_image.shape[0]  # the box follows the rounded image size: within half a pixel of the image
        assert box_sizes(out_boxes)[0] == pytest.approx(want, rel=0.5 / (side - 0.5))


def test_scale_is_clipped_or_falls_back_to_the_default():
    dist = size_distribution(tiny_sizes(5000))
    boxes = np.array([[0.0, 0.0, 400.0, 400.0]])  # needs ≈ 0.03 to reach 12 px
    rng = np.random.default_rng(5)
    assert ScaleMatch(target=dist, scale_range=(0.1, 1.0)).scale_for(boxes, rng) == 0.1
    assert ScaleMatch(target=dist, scale_range=(0.1, 1.0), clip=False, default_scale=0.25).scale_for(boxes, rng) == 0.25
    assert ScaleMatch(target=dist).scale_for(np.zeros((0, 4)), rng) == 1.0


def test_boxes_below_two_pixels_are_dropped_and_images_resized():
    dist = size_distribution(np.full(1000, 10.0) + np.linspace(0, 1, 1000))
    msm = MonotoneScaleMatch(source_sizes=[100.0, 100.0, 101.0], target=dist, scale_range=(0.0, 2.0))
    image = np.full((200, 300, 3), 7, np.uint8)
    boxes = np.array([[0, 0, 100, 100], [150, 150, 10, 10.0]])
    out, kept = msm(image, boxes)  # src = √(100·10) ≈ 31.6 → scale ≈ 0.32: the 10 px box becomes ≈ 3 px
    scale = msm.scale_for(boxes)
    assert scale == pytest.approx(10 / np.sqrt(1000))
    assert out.shape == (round(200 * scale), round(300 * scale), 3) and np.all(out == 7)
    assert len(kept) == 2
    out, kept = msm(image, np.array([[0, 0, 400, 400], [150, 150, 5, 5.0]]))  # scale ≈ 0.2: 5 px → 1 px
    assert len(kept) == 1 and kept[0, 2] >= 2


def test_resize_bilinear_interpolates_linearly():
    ramp = np.arange(4, dtype=np.float64)[None, :].repeat(2, 0)
    up = resize_bilinear(ramp, 2, 8)
    np.testing.assert_allclose(up[0], [0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3])
