"""Post-processing rules on small handcrafted arrays, and the live tuner's cache."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from wsss_napari import WsssError
from wsss_napari.classes import BACKGROUND, NORMAL, STROMA, TUMOR
from wsss_napari.params import PostprocParams
from wsss_napari.postproc import Cancelled, LiveTuner, postprocess
from wsss_napari.postproc.area import min_area_rule
from wsss_napari.postproc.background import (
    allowed_classes,
    background_cutoff,
    base_labels,
    foreground_argmax,
)
from wsss_napari.postproc.glass import glass_mask
from wsss_napari.postproc.islands import islands_in_normal, small_normal_to_stroma
from wsss_napari.postproc.knn import knn_relabel, label_regions
from wsss_napari.postproc.reference import reference_postprocess
from wsss_napari.region import MaskGeometry, Region

#: Every rule off: the chain is the plain argmax with the background channel.
PLAIN = PostprocParams(white_method="none", min_area_pct=0.0, min_region=0, island_rule=False,
                       score_threshold=0.0)


def one_hot_cams(labels: np.ndarray, value: float = 0.9, floor: float = 0.05) -> np.ndarray:
    cams = np.full((3, *labels.shape), floor, np.float32)
    for c in range(3):
        cams[c][labels == c] = value
    return cams


def smooth_cams(h: int, w: int, seed: int) -> np.ndarray:
    import cv2

    rng = np.random.default_rng(seed)
    small = rng.random((3, max(2, h // 20), max(2, w // 20))).astype(np.float32)
    cams = np.stack([cv2.resize(s, (w, h), interpolation=cv2.INTER_LINEAR) for s in small])
    return np.clip(cams**2 + rng.normal(0, 0.02, cams.shape).astype(np.float32), 0, 1)


# ---------------------------------------------------------------- background and classes

def test_background_channel_matches_power_argmax():
    cams = smooth_cams(64, 80, seed=1)
    for y in (0.0, 1.0, 3.0, 8.0, 32.0):
        fg, mx = foreground_argmax(cams, np.ones(3, bool))
        fast = base_labels(fg, mx, y)
        stack = np.concatenate([cams, np.power(1.0 - cams.max(0, keepdims=True), y)])
        np.testing.assert_array_equal(fast, np.argmax(stack, axis=0))


def test_larger_exponent_means_less_background():
    cams = smooth_cams(64, 64, seed=2)
    counts = [(postprocess(cams, PLAIN.replace(bg_exponent=y)) == BACKGROUND).sum()
              for y in (1.0, 2.0, 4.0, 8.0, 16.0, 64.0)]
    assert counts == sorted(counts, reverse=True) and counts[0] > counts[-1]
    assert background_cutoff(1.0) == pytest.approx(0.5)


def test_suppressed_and_absent_classes_never_appear():
    lab = np.zeros((20, 30), np.uint8)
    lab[:, 10:20], lab[:, 20:] = STROMA, NORMAL
    cams = one_hot_cams(lab)
    out = postprocess(cams, PLAIN.replace(score_threshold=0.25), scores=[0.9, 0.1, 0.9])
    assert STROMA not in out and (out[:, :10] == TUMOR).all()
    out = postprocess(cams, PLAIN, present=np.array([True, True, False]))
    assert NORMAL not in out
    # every score under the threshold: the best-scoring class is still kept
    assert allowed_classes(3, [0.1, 0.2, 0.05], 0.5).tolist() == [False, True, False]


def test_glass_and_explicit_background_are_forced():
    lab = np.zeros((40, 40), np.uint8)
    cams = one_hot_cams(lab)
    img = np.full((40, 40, 3), 120, np.uint8)
    img[:, 30:] = 245  # a glass band
    img[5:7, 5:7] = 250  # a 4-px white speck in tissue: not glass
    p = PLAIN.replace(white_method="grey", white_threshold=210.0, white_min_size=10)
    out = postprocess(cams, p, image=img)
    assert (out[:, 30:] == BACKGROUND).all() and (out[:, :30] == TUMOR).all()
    sat = glass_mask(img, "saturation", 20.0, 10)
    assert sat[:, 30:].all()  # grey pixels are unsaturated too
    bg = np.zeros((40, 40), np.uint8)
    bg[:10] = 1
    out = postprocess(cams, PLAIN, background=bg)
    assert (out[:10] == BACKGROUND).all() and (out[10:] == TUMOR).all()


# ---------------------------------------------------------------- area rule

@pytest.mark.parametrize(("min_pct", "dropped"), [(5.0, True), (2.0, False)])
def test_class_at_3_percent_of_a_subpatch(min_pct, dropped):
    lab = np.zeros((100, 100), np.uint8)
    lab[:3, :] = STROMA  # 300 px = 3 % of the 100 x 100 sub-patch
    cams = one_hot_cams(lab)
    cams[NORMAL][:3, :] = 0.5  # the runner-up where stroma is
    out = min_area_rule(lab, cams, np.ones(3, bool), cams.max(0), 8.0, 100, min_pct)
    if dropped:
        assert STROMA not in out and (out[:3] == NORMAL).all()
    else:
        np.testing.assert_array_equal(out, lab)


def test_area_grid_is_anchored_globally():
    lab = np.zeros((64, 64), np.uint8)
    lab[30:34, 30:34] = STROMA  # 16 px: 1.6 % of a 32 x 32 block at (0, 0), 4 blocks else
    cams = one_hot_cams(lab)
    args = (cams, np.ones(3, bool), cams.max(0), 8.0, 32, 2.0)
    assert STROMA not in min_area_rule(lab, *args)  # split over 4 blocks: 0.4 % each
    shifted = min_area_rule(lab, *args, origin=(2, 2))  # one block holds it all: 1.6 %
    assert STROMA not in shifted
    kept = min_area_rule(lab, *args[:-1], 1.0, origin=(2, 2))
    assert (kept == lab).all()


# ---------------------------------------------------------------- islands

def test_small_island_in_normal_becomes_normal():
    lab = np.full((60, 60), NORMAL, np.uint8)
    lab[10:15, 10:15] = TUMOR  # 25 px inside normal
    lab[40:50, 40:50] = STROMA  # 100 px inside normal
    lab[0:5, 30:35] = TUMOR  # touches the border: not known to be enclosed
    lab[20:24, 20:24] = BACKGROUND  # a lumen stays background
    out = islands_in_normal(lab, max_size=50)
    assert (out[10:15, 10:15] == NORMAL).all()
    assert (out[40:50, 40:50] == STROMA).all() and (out[0:5, 30:35] == TUMOR).all()
    assert (out[20:24, 20:24] == BACKGROUND).all()
    out = small_normal_to_stroma(np.where(np.arange(60)[None] < 58, TUMOR, NORMAL).astype(
        np.uint8), max_size=200)
    assert NORMAL not in out


# ---------------------------------------------------------------- kNN

def test_ten_pixel_island_takes_the_surrounding_class():
    lab = np.full((50, 50), STROMA, np.uint8)
    lab[:, 35:] = TUMOR
    lab[20:22, 10:15] = NORMAL  # 10 px, deep in stroma
    regions = label_regions(lab)
    out = knn_relabel(lab, regions, min_region=20, k=8)
    assert (out[20:22, 10:15] == STROMA).all() and (out[:, 35:] == TUMOR).all()
    assert knn_relabel(lab, regions, min_region=5, k=8) is lab  # 10 px is not small at 5


def test_knn_vote_follows_the_nearest_large_regions():
    lab = np.zeros((40, 40), np.uint8)
    lab[:, 20:] = STROMA
    lab[18:22, 16:19] = NORMAL  # 12 px, nearer the tumor side (x < 20)
    out = knn_relabel(lab, label_regions(lab), min_region=50, k=3)
    assert (out[18:22, 16:19] == TUMOR).all()


# ---------------------------------------------------------------- the chain

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_chain_agrees_with_the_reference(seed):
    import cv2

    cams = smooth_cams(157, 211, seed)
    rng = np.random.default_rng(seed)
    img = cv2.resize((rng.random((16, 21, 3)) * 255).astype(np.uint8), (211, 157))
    scores = np.array([0.9, 0.3, 0.9])
    for p in (PostprocParams(min_region=0, area_patch=64, normal_min_size=40),
              PostprocParams(white_method="saturation", white_threshold=40.0, min_region=0)):
        fast = postprocess(cams, p, image=img, scores=scores)
        ref = reference_postprocess(cams, p, image=img, scores=scores)
        np.testing.assert_array_equal(fast, ref)  # every rule but kNN is exact
    p = PostprocParams(area_patch=64, min_region=120)
    agree = (postprocess(cams, p, image=img, scores=scores)
             == reference_postprocess(cams, p, image=img, scores=scores)).mean()
    assert agree > 0.99  # kNN: chamfer distances and ties differ from the KD-tree's


def test_live_tuner_equals_postprocess_whatever_the_slider_order():
    import cv2

    cams = smooth_cams(120, 140, seed=3)
    img = cv2.resize((np.random.default_rng(3).random((12, 14, 3)) * 255).astype(np.uint8),
                     (140, 120))
    tuner = LiveTuner(cams, image=img, scores=[0.8, 0.6, 0.4])
    p = PostprocParams(area_patch=64, min_region=60)
    for change in ({}, {"bg_exponent": 3.0}, {"min_region": 150}, {"knn_k": 2},
                   {"white_threshold": 150.0}, {"min_area_pct": 10.0}, {"score_threshold": 0.5},
                   {"island_rule": False}, {"bg_exponent": 8.0}):
        p = p.replace(**change)
        np.testing.assert_array_equal(tuner.run(p), postprocess(cams, p, image=img,
                                                                scores=[0.8, 0.6, 0.4]))
    present = np.array([True, False, True])
    np.testing.assert_array_equal(
        tuner.run(p, present=present),
        postprocess(cams, p, image=img, scores=[0.8, 0.6, 0.4], present=present))


def test_preview_region_and_cancel():
    cams = smooth_cams(200, 300, seed=4)
    tuner = LiveTuner(cams)
    p = PLAIN
    full = tuner.run(p)
    assert tuner.preview_downsample(100) == 3
    small = tuner.preview(p, max_size=100)
    assert small.shape == (67, 100)
    assert (small == full[::3, ::3]).mean() > 0.9
    box = Region(y=50, x=60, height=100, width=140)  # level-0 = map pixels here
    crop = tuner.run(p, region=box)
    np.testing.assert_array_equal(crop, full[50:150, 60:200])  # pointwise rules: exact
    both = tuner.run(p, region=box, downsample=2)
    assert both.shape == (50, 70)
    with pytest.raises(Cancelled):
        tuner.run(p.replace(bg_exponent=2.0), should_stop=lambda: True)
    with pytest.raises(WsssError, match="outside"):
        tuner.run(p, region=Region(y=500, x=500, height=100, width=100))
    # maps of a region of a slide at 1/4: the region is asked in level-0 slide pixels
    geo = MaskGeometry(y=400, x=800, downsample=4)
    placed = LiveTuner(cams, geometry=geo)
    crop = placed.run(p, region=Region(y=400 + 50 * 4, x=800 + 60 * 4, height=400, width=560))
    np.testing.assert_array_equal(crop, full[50:150, 60:200])
    with pytest.raises(WsssError, match="outside"):  # map coordinates are not level-0 ones
        placed.run(p, region=Region(y=50, x=60, height=100, width=140))


def test_tuner_is_safe_from_threads():
    cams = smooth_cams(150, 150, seed=5)
    tuner = LiveTuner(cams)
    params = [PostprocParams(bg_exponent=y, min_region=80) for y in (1.0, 4.0, 16.0)]
    expected = [postprocess(cams, p) for p in params]
    errors = []

    def work(i):
        for _ in range(4):
            for p, e in zip(params[i:] + params[:i], expected[i:] + expected[:i], strict=True):
                if not np.array_equal(tuner.run(p), e):
                    errors.append(i)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_pixel_counts_are_model_pixels_whatever_the_map_resolution():
    """A whole-slide map at 1/4 of the model's resolution (``out_stride`` 4): a 30-px speck
    there is 480 model px, so ``min_region=200`` (model px) keeps it, and ``min_region=800``
    removes it; at ``pixel_scale=1`` 200 would already remove it."""
    cams = np.zeros((3, 60, 60), np.float32)
    cams[STROMA] = 0.9
    cams[NORMAL, 20:25, 20:26] = 1.0  # 30 px of normal inside stroma
    p = PostprocParams(score_threshold=0, white_method="none", min_area_pct=0,
                       island_rule=False, min_region=200)
    speck = (slice(20, 25), slice(20, 26))
    assert (postprocess(cams, p, pixel_scale=4)[speck] == NORMAL).all()
    assert (postprocess(cams, p.replace(min_region=800), pixel_scale=4)[speck] == STROMA).all()
    assert (postprocess(cams, p)[speck] == STROMA).all()
    # a preview of a pixel_scale-4 tuner scales on top of it (2 x 4 model px per pixel)
    tuner = LiveTuner(cams, pixel_scale=4)
    assert (tuner.run(p.replace(min_region=100), downsample=2)[10:12, 10:13] == NORMAL).all()
    with pytest.raises(WsssError, match="pixel_scale"):
        LiveTuner(cams, pixel_scale=0)


@pytest.mark.parametrize("shape", [(1, 1), (4, 1), (1, 4), (2, 2), (9, 1), (3, 5)])
def test_tiny_maps_equal_the_reference(shape):
    """A tiny region crop or preview: OpenCV reads a 1 x 1 or 4 x 1 image as a scalar."""
    rng = np.random.default_rng(sum(shape))
    cams = rng.random((3, *shape)).astype(np.float32)
    img = rng.integers(150, 256, (*shape, 3)).astype(np.uint8)
    for p in (PostprocParams(min_region=0, white_min_size=2, normal_min_size=3, area_patch=8,
                             min_area_pct=30.0, score_threshold=0.0),
              PostprocParams(min_region=0, bg_exponent=0.5, island_max_size=3)):
        np.testing.assert_array_equal(postprocess(cams, p, image=img),
                                      reference_postprocess(cams, p, image=img))
    tuner = LiveTuner(cams, image=img, pixel_scale=4)
    assert tuner.run(PostprocParams()).shape == shape
    assert tuner.run(PostprocParams(), region=Region(y=0, x=0, height=1, width=1)).shape == (1, 1)


def test_bad_inputs_are_clear_errors():
    with pytest.raises(WsssError, match="CAMs"):
        LiveTuner(np.zeros((5, 4, 4), np.float32))
    with pytest.raises(WsssError, match="does not match"):
        LiveTuner(np.zeros((3, 4, 4), np.float32), image=np.zeros((5, 4, 3), np.uint8))
    with pytest.raises(WsssError, match="scores"):
        LiveTuner(np.zeros((3, 4, 4), np.float32), scores=[0.5])


def test_synthetic_tissue_with_exact_cams_is_recovered():
    from wsss_napari.sample.synth import make_tissue

    rgb, mask = make_tissue(256, 256, seed=1)
    cams = one_hot_cams(mask)
    out = postprocess(cams, PostprocParams(white_method="none", min_region=0, min_area_pct=0.0,
                                           island_rule=False), background=mask == BACKGROUND)
    np.testing.assert_array_equal(out, mask)
