"""Tiny-object detection data: digits pasted onto bundled photographs with exact boxes."""

import numpy as np
import pytest
import torch

from bitfx.zoo.detection_data import PHOTOGRAPHS, tiny_objects
from bitfx.zoo.sr_data import bundled_image_dir


def _truths(batches):
    return [truth for _, truths in batches for truth in truths]


def test_boxes_are_in_the_size_range_inside_the_image_and_apart():
    batches = tiny_objects((1, 1, 48, 64), count=64, batch_size=16, seed=1)
    assert [images.shape for images, _ in batches] == [(16, 1, 48, 64)] * 4
    truths = _truths(batches)
    regular = np.concatenate([t.boxes[~t.ignore] for t in truths])
    assert len(regular) > 64 and np.all(regular[:, 2] == regular[:, 3])
    assert regular[:, 2].min() == 4 and regular[:, 2].max() == 20  # √area = side, all in [4, 20]
    for truth in truths:
        x, y, w, h = truth.boxes.T
        assert np.all(x >= 0) and np.all(y >= 0) and np.all(x + w <= 64) and np.all(y + h <= 48)
        for i in range(len(truth.boxes)):
            for j in range(i):
                (xi, yi, wi, hi), (xj, yj, wj, hj) = truth.boxes[i], truth.boxes[j]
                assert xi + wi <= xj or xj + wj <= xi or yi + hi <= yj or yj + hj <= yi  # no overlap
    assert sum(t.ignore.sum() for t in truths) > 5 and sum(t.uncertain.sum() for t in truths) > 5
    assert not any((t.ignore & t.uncertain).any() for t in truths)
    assert all(images.min() >= 0 and images.max() <= 1 for images, _ in batches)


def test_every_clear_box_holds_a_visible_glyph():
    (images, truths), *_ = tiny_objects(count=32, batch_size=32, seed=2)
    for image, truth in zip(images[:, 0].numpy(), truths):
        for (x, y, w, h), skip in zip(truth.boxes.astype(int), truth.ignore | truth.uncertain):
            if not skip:
                assert np.ptp(image[y : y + h, x : x + w]) > 0.1  # the glyph is visible


def test_deterministic_by_seed_and_splits_differ():
    first, again = tiny_objects(count=16, seed=5), tiny_objects(count=16, seed=5)
    assert torch.equal(first[0][0], again[0][0])
    assert all(np.array_equal(a.boxes, b.boxes) for a, b in zip(_truths(first), _truths(again)))
    assert not torch.equal(first[0][0], tiny_objects(count=16, seed=6)[0][0])
    assert not torch.equal(first[0][0], tiny_objects(count=16, seed=5, split="test")[0][0])
    assert not set(PHOTOGRAPHS["train"]) & set(PHOTOGRAPHS["test"])
    assert all((bundled_image_dir() / name).is_file() for names in PHOTOGRAPHS.values() for name in names)
    assert tiny_objects((1, 3, 32, 32), count=2)[0][0].shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match="split"):
        tiny_objects(split="val")
