"""Super-resolution data from scikit-image's bundled photographs, and PSNR."""

import math

import pytest
import torch

from bitfx.zoo.sr_data import (
    TEST_IMAGES,
    TRAIN_IMAGES,
    bundled_image_dir,
    downsample,
    load_pairs,
    luma,
    psnr_y,
    random_patches,
)


def test_every_listed_photograph_is_bundled_and_train_and_test_are_disjoint():
    folder = bundled_image_dir()
    assert all((folder / name).is_file() for name in TRAIN_IMAGES + TEST_IMAGES)
    assert not set(TRAIN_IMAGES) & set(TEST_IMAGES)
    with pytest.raises(FileNotFoundError, match="not bundled"):
        load_pairs(("lena.png",), 2)


def test_pairs_patches_and_alignment():
    (pair,) = load_pairs(("chelsea.png",), 2)
    assert pair.hr.shape == (3, 300, 450) and pair.lr.shape == (3, 150, 225)
    assert 0 <= float(pair.hr.min()) and float(pair.hr.max()) <= 1
    low, high = random_patches([pair], 4, 16, 2, torch.Generator().manual_seed(0))
    assert low.shape == (4, 3, 16, 16) and high.shape == (4, 3, 32, 32)
    inner = (slice(None), slice(None), slice(3, -3), slice(3, -3))
    assert float((downsample(high, 2)[inner] - low[inner]).abs().max()) < 0.02  # the same place of the same image


def test_psnr_on_luma_with_shaved_border():
    hr = (
        torch.rand(3, 20, 20, generator=torch.Generator().manual_seed(1)) * 255
    ).round() / 255  # 8-bit levels, like a photograph
    assert psnr_y(hr, hr, 2) == math.inf
    noisy = hr.clone()
    noisy[:, :2] = 1 - noisy[:, :2]  # changes only the shaved rows
    assert psnr_y(noisy, hr, 2) == math.inf
    shifted = (hr + 4 / 255).clamp(0, 1)
    expected_mse = ((luma((shifted * 255).round() / 255) - luma(hr))[..., 2:-2, 2:-2] ** 2).mean()
    assert psnr_y(shifted, hr, 2) == pytest.approx(10 * math.log10(1 / float(expected_mse)))
    white = torch.ones(3, 4, 4)
    assert float(luma(white).mean()) == pytest.approx(235 / 255)
