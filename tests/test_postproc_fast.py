"""The OpenCV / lookup-table fast paths of the post-processing rules against plain versions."""

from __future__ import annotations

import numpy as np
import pytest

from wsss_napari.classes import BACKGROUND, NORMAL, STROMA, TUMOR
from wsss_napari.params import PostprocParams
from wsss_napari.postproc import LiveTuner, postprocess
from wsss_napari.postproc.background import (
    background_code,
    base_labels,
    foreground_argmax,
    with_background,
)
from wsss_napari.postproc.glass import remove_small
from wsss_napari.postproc.islands import islands_in_normal, small_normal_to_stroma
from wsss_napari.postproc.knn import knn_relabel, label_regions
from wsss_napari.postproc.reference import _reference_knn, reference_postprocess


def blobby_labels(h: int, w: int, seed: int, cell: int = 6) -> np.ndarray:
    """A label map with regions of many sizes (speckle on top of blobs)."""
    import cv2

    rng = np.random.default_rng(seed)
    field = rng.random((4, max(2, h // cell), max(2, w // cell))).astype(np.float32)
    big = np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_LINEAR) for f in field])
    big += rng.normal(0, 0.08, big.shape).astype(np.float32)
    return np.argmax(big, axis=0).astype(np.uint8)


@pytest.mark.parametrize("seed", [0, 1])
def test_foreground_argmax_equals_numpy_with_ties(seed):
    rng = np.random.default_rng(seed)
    cams = (rng.integers(0, 4, (3, 50, 70)) / 4).astype(np.float32)  # many exact ties
    for allowed in ([1, 1, 1], [0, 1, 1], [1, 0, 1], [0, 0, 1]):
        allowed = np.array(allowed, bool)
        lab, mx = foreground_argmax(cams, allowed)
        masked = np.where(allowed[:, None, None], cams, -np.inf)
        np.testing.assert_array_equal(lab, np.argmax(masked, axis=0))
        np.testing.assert_array_equal(mx, masked.max(0))
    # a crop view (strided rows), as LiveTuner's region runs pass
    lab, _ = foreground_argmax(cams[:, 5:40, 7:60], np.ones(3, bool))
    np.testing.assert_array_equal(lab, np.argmax(cams[:, 5:40, 7:60], axis=0))


def test_base_labels_and_forced_background_accept_bool_and_uint8():
    rng = np.random.default_rng(3)
    fg = rng.integers(0, 3, (30, 40)).astype(np.uint8)
    mx = rng.random((30, 40)).astype(np.float32)
    forced = rng.random((30, 40)) < 0.2
    expected = fg.copy()
    expected[(mx < 0.5) | forced] = BACKGROUND
    for f in (forced, forced.astype(np.uint8), forced.astype(np.uint8) * 255):
        np.testing.assert_array_equal(base_labels(fg, mx, 1.0, f), expected)
    out = with_background(fg, background_code(forced))
    assert out is not fg and (out[forced] == BACKGROUND).all()
    assert (out[~forced] == fg[~forced]).all()


@pytest.mark.parametrize("min_size", [2, 10, 64])
def test_remove_small_equals_skimage(min_size):
    from skimage import morphology

    rng = np.random.default_rng(min_size)
    mask = rng.random((120, 150)) < 0.45
    ref = morphology.remove_small_objects(mask, max_size=min_size - 1, connectivity=2)
    ref = morphology.remove_small_holes(ref, max_size=min_size - 1, connectivity=2)
    np.testing.assert_array_equal(remove_small(mask, min_size), ref)


def test_island_rules_equal_a_plain_implementation():
    from skimage import measure

    for seed in range(3):
        lab = blobby_labels(90, 110, seed)
        for max_size in (5, 40, 400):
            ref = lab.copy()
            cc = measure.label(lab != NORMAL, connectivity=2, background=0)
            for r in measure.regionprops(cc):
                y0, x0, y1, x1 = r.bbox
                if r.area <= max_size and y0 > 0 and x0 > 0 and y1 < 90 and x1 < 110:
                    ref[(cc == r.label) & (lab <= STROMA)] = NORMAL
            np.testing.assert_array_equal(islands_in_normal(lab, max_size), ref)
            ref = lab.copy()
            cc = measure.label(lab == NORMAL, connectivity=2, background=0)
            sizes = np.bincount(cc.ravel())
            ref[(cc > 0) & (sizes[cc] < max_size)] = STROMA
            np.testing.assert_array_equal(small_normal_to_stroma(lab, max_size), ref)


def test_label_regions_is_the_per_label_8_connected_partition():
    from skimage import measure

    lab = blobby_labels(80, 100, seed=4)
    regions = label_regions(lab)
    ref = measure.label(lab.astype(np.int16), connectivity=2, background=-1)
    # same partition: a one-to-one map between the two id images
    pairs = np.unique(np.stack([regions.ids.ravel(), ref.ravel()]), axis=1)
    assert pairs.shape[1] == len(np.unique(regions.ids)) == len(np.unique(ref))
    np.testing.assert_array_equal(regions.area[regions.ids], np.bincount(ref.ravel())[ref])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_knn_agrees_with_the_kd_tree_reference(seed):
    lab = blobby_labels(150, 170, seed, cell=10)
    regions = label_regions(lab)
    for min_region, k in ((30, 1), (120, 8)):
        fast = knn_relabel(lab, regions, min_region, k)
        ref = _reference_knn(lab, min_region, k)
        # a stress map (10-20 % of pixels relabelled): equidistant neighbours of different
        # labels are common and the KD-tree picks among them arbitrarily
        assert (fast == ref).mean() > 0.985
        assert ((fast != lab) == (ref != lab)).mean() > 0.99  # the same regions change


def test_speckle_uses_one_transform_and_still_agrees_with_the_kd_tree():
    """Pure noise: thousands of small regions enclosed by small regions. They share one
    distance transform (not one each: 40 s at 2048^2 before), with the same votes."""
    rng = np.random.default_rng(4)
    lab = blobby_labels(120, 120, 4, cell=30)
    lab[30:90, 30:90] = rng.integers(0, 4, (60, 60))  # a speckled square in large regions
    regions = label_regions(lab)
    fast = knn_relabel(lab, regions, 50, 4)
    ref = _reference_knn(lab, 50, 4)
    assert (fast[30:90, 30:90] != lab[30:90, 30:90]).mean() > 0.5  # the speckle was relabelled
    assert (fast == ref).mean() > 0.97


def test_enclosed_small_regions_vote_from_farther_pixels():
    lab = np.full((60, 60), TUMOR, np.uint8)
    lab[:, 40:] = NORMAL
    lab[20:29, 10:19] = STROMA  # 81 px ring...
    lab[23:26, 13:16] = NORMAL  # ...around a 9-px normal core: no pixel of it touches tumor
    out = knn_relabel(lab, label_regions(lab), min_region=100, k=4)
    assert (out[:, :40] == TUMOR).all() and (out[:, 40:] == NORMAL).all()


@pytest.mark.parametrize("seed", [5, 6])
def test_noisy_chain_agrees_with_the_reference(seed):
    """Speckled CAMs (thousands of small regions, islands, glass specks) through every rule."""
    import cv2

    rng = np.random.default_rng(seed)
    h, w = 140, 180
    coarse = rng.random((3, h // 8, w // 8)).astype(np.float32)
    cams = np.stack([cv2.resize(c, (w, h)) for c in coarse]) ** 2
    cams = np.clip(cams + rng.normal(0, 0.04, cams.shape).astype(np.float32), 0, 1)
    img = np.full((h, w, 3), 150, np.uint8)
    img[rng.random((h, w)) < 0.1] = 240  # glass specks
    img[:, :30] = 245
    scores = [0.9, 0.8, 0.7]
    for p in (PostprocParams(min_region=0, area_patch=32, normal_min_size=30,
                             island_max_size=300),
              PostprocParams(white_method="saturation", white_threshold=30.0, min_region=0)):
        np.testing.assert_array_equal(postprocess(cams, p, image=img, scores=scores),
                                      reference_postprocess(cams, p, image=img, scores=scores))
    p = PostprocParams(area_patch=64, min_region=80, knn_k=4)
    agree = (postprocess(cams, p, image=img, scores=scores)
             == reference_postprocess(cams, p, image=img, scores=scores)).mean()
    assert agree > 0.99


def test_reused_buffers_do_not_leak_between_sizes_or_tuners():
    a = blobby_labels(64, 64, 7).astype(np.float32)
    cams_a = np.stack([a == c for c in range(3)]).astype(np.float32) * 0.9
    b = blobby_labels(100, 80, 8).astype(np.float32)
    cams_b = np.stack([b == c for c in range(3)]).astype(np.float32) * 0.9
    p = PostprocParams(white_method="none", min_region=50)
    first_a, first_b = postprocess(cams_a, p), postprocess(cams_b, p)
    tuner = LiveTuner(cams_a)
    kept = tuner.run(p)
    for _ in range(2):
        np.testing.assert_array_equal(postprocess(cams_b, p), first_b)
        np.testing.assert_array_equal(tuner.run(p.replace(min_region=20)),
                                      postprocess(cams_a, p.replace(min_region=20)))
    np.testing.assert_array_equal(kept, first_a)
    tuner.clear()
    np.testing.assert_array_equal(tuner.run(p), first_a)


def test_clear_frees_the_glass_helper_threads_buffers_too():
    """Glass detection runs on a helper thread; its reused buffers must go with clear()."""
    from wsss_napari.postproc import _fast

    rng = np.random.default_rng(3)
    cams = rng.random((3, 96, 96)).astype(np.float32)
    img = np.full((96, 96, 3), 150, np.uint8)
    img[rng.random((96, 96)) < 0.2] = 240  # glass specks: remove_small labels them
    scores = [0.9, 0.8, 0.7]
    tuner = LiveTuner(cams, image=img, scores=scores)
    first = tuner.run(PostprocParams(white_min_size=16))
    assert any(pool for pool in _fast._pools.values())  # some thread kept buffers
    tuner.clear()
    assert not any(pool for pool in _fast._pools.values())
    np.testing.assert_array_equal(tuner.run(PostprocParams(white_min_size=16)), first)


def test_more_than_65535_components_fall_back_to_int32_ids():
    """uint16 ids (half the bytes of every pass) must not wrap on very speckled maps."""
    from skimage import morphology

    from wsss_napari.postproc._fast import areas, components

    lab = np.zeros((520, 520), np.uint8)
    lab[::2, ::2] = STROMA  # 67 600 one-pixel stroma regions, not even diagonal neighbours
    n, ids = components(lab == STROMA)
    assert n == 260 * 260 + 1 and ids.dtype == np.int32
    assert (areas(ids, n)[1:] == 1).all()
    n, ids = components(lab[:300, :300] == STROMA)  # 22 500: uint16
    assert ids.dtype == np.uint16 and (areas(ids, n)[1:] == 1).all()
    regions = label_regions(lab)
    assert regions.ids.dtype == np.int32 and regions.area.size == 260 * 260 + 2
    assert regions.area[regions.ids].min() == 1 and regions.area.sum() == lab.size
    assert (knn_relabel(lab, regions, min_region=2, k=1) == TUMOR).all()
    mask = lab == STROMA
    np.testing.assert_array_equal(remove_small(mask, 2),
                                  morphology.remove_small_objects(mask, max_size=1,
                                                                  connectivity=2))


def test_warm_up_runs_once_per_process():
    from wsss_napari.postproc import warm_up

    assert warm_up(background=False) is None  # waits for the compiled loops
    thread = warm_up()
    assert thread is warm_up() and not thread.is_alive()
