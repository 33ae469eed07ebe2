"""Augmentations keep images and labels consistent."""

from __future__ import annotations

import numpy as np
import pytest

from wsss_napari.train import augment as aug


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def _img_from_mask(mask):
    """An image whose colour encodes the mask, so alignment can be checked after transforms."""
    return np.stack([mask * 60, mask * 30, 255 - mask * 50], axis=-1).astype(np.uint8)


def test_flips_move_mask_with_image(rng):
    mask = np.random.default_rng(1).integers(0, 4, (40, 50)).astype(np.uint8)
    img = _img_from_mask(mask)
    for _ in range(8):
        out, m = aug.random_flip(img, mask, rng)
        np.testing.assert_array_equal(out, _img_from_mask(m))


def test_random_resized_crop_shapes_and_label_values(rng):
    mask = np.zeros((100, 120), np.uint8)
    mask[:, 60:] = 2
    img = _img_from_mask(mask)
    for _ in range(10):
        out, m = aug.random_resized_crop(img, mask, 48, rng, scale=(0.25, 1.0))
        assert out.shape == (48, 48, 3) and m.shape == (48, 48)
        assert set(np.unique(m)) <= {0, 2}  # nearest neighbour: no invented labels


def test_random_crop_pads_small_images_with_ignore(rng):
    img = np.zeros((20, 30, 3), np.uint8)
    mask = np.ones((20, 30), np.uint8)
    out, m = aug.random_crop(img, mask, 32, rng)
    assert out.shape == (32, 32, 3)
    assert (m == aug.IGNORE).sum() == 32 * 32 - 20 * 30
    assert (out[m == aug.IGNORE] == 255).all()


def test_hed_jitter_is_identity_at_zero_and_changes_stain_otherwise(rng):
    img = np.random.default_rng(2).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    same = aug.hed_jitter(img, 1e-9, rng)
    assert np.abs(same.astype(int) - img).max() <= 1
    assert aug.hed_jitter(img, 0.0, rng) is img
    changed = aug.hed_jitter(img, 0.2, rng)
    assert changed.dtype == np.uint8 and changed.shape == img.shape
    assert np.abs(changed.astype(int) - img).mean() > 1


def test_brightness_contrast_and_blur_keep_dtype(rng):
    img = np.random.default_rng(3).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    assert aug.brightness_contrast(img, rng).dtype == np.uint8
    blurred = aug.gaussian_blur(img, rng, sigma=(1.5, 1.5))
    assert blurred.shape == img.shape and blurred.std() < img.std()


def test_cutmix_labels_follow_the_visible_classes(rng):
    a_mask = np.zeros((64, 64), np.uint8)            # all tumor
    b_mask = np.full((64, 64), 2, np.uint8)          # all normal
    a, b = _img_from_mask(a_mask), _img_from_mask(b_mask)
    la, lb = np.array([1, 0, 0], np.float32), np.array([0, 0, 1], np.float32)
    for _ in range(10):
        out, labels, m = aug.cutmix(a, la, b, lb, rng, a_mask, b_mask)
        np.testing.assert_array_equal(out, _img_from_mask(m))  # image and mask mixed alike
        np.testing.assert_array_equal(labels, aug.labels_from_mask(m))
        np.testing.assert_array_equal(labels, [1, 0, 1])
    # without masks: the union (donors are single-label patches by contract)
    _, labels, m = aug.cutmix(a, la, b, lb, rng)
    assert m is None
    np.testing.assert_array_equal(labels, [1, 0, 1])


def test_mosaic_of_single_label_patches_is_labelled_by_union(rng):
    tiles = []
    for c in (0, 1, 1, 2):
        mask = np.full((40, 40), c, np.uint8)
        tiles.append((_img_from_mask(mask), np.eye(3, dtype=np.float32)[c], mask))
    out, labels, m = aug.mosaic(tiles, 64, rng)
    assert out.shape == (64, 64, 3) and m.shape == (64, 64)
    np.testing.assert_array_equal(labels, [1, 1, 1])
    np.testing.assert_array_equal(labels, aug.labels_from_mask(m))
    out2, labels2, m2 = aug.mosaic([(t[0], t[1], None) for t in tiles[1:3]] * 2, 64, rng)
    assert m2 is None
    np.testing.assert_array_equal(labels2, [0, 1, 0])
