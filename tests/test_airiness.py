"""Airiness: the glass fraction around a pixel, the alveolar switch, and what they say on real
lung tissue (normal parenchyma is mostly air)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wsss_napari.airiness import SLOPE, alveolar_switch, glass_fraction
from wsss_napari.classes import NORMAL, STROMA, TUMOR
from wsss_napari.epithelium import class_prior_of
from wsss_napari.train.data import load_mask, load_rgb


def test_glass_fraction_measures_a_window_in_microns():
    rgb = np.full((200, 400, 3), 120, np.uint8)
    rgb[:, :200] = 245  # glass on the left half (40 000 um^2: a hole, by the default rule)
    at1 = glass_fraction(rgb, mpp=1.0, window_um=40.0)  # 40 px window
    assert at1[100, 10] == 1.0 and at1[100, 390] == 0.0
    assert abs(at1[100, 200] - 0.5) < 0.05  # the boundary: half glass
    at2 = glass_fraction(rgb, mpp=2.0, window_um=40.0)  # the same microns: 20 px
    assert at2[100, 215] == 0.0 and at1[100, 215] > 0.0


def test_only_holes_count_not_the_slides_background_beside_a_tissue_edge():
    rgb = np.full((600, 600, 3), 120, np.uint8)  # tissue at 1 um/px
    rgb[:, :300] = 245  # the slide's background: 180 000 um^2 of glass
    for y in range(320, 600, 40):  # alveolar spaces: 20 x 20 um holes in the tissue
        rgb[y:y + 20, 320:340] = 245
    d = glass_fraction(rgb, mpp=1.0, window_um=127.0)
    assert d[300, 302] < 0.03  # the tissue edge is not airy
    assert d[400, 330] > 0.06  # amid the holes it is
    # (without the rule)
    assert glass_fraction(rgb, mpp=1.0, window_um=127.0, max_hole_um2=0)[300, 302] > 0.4


def test_alveolar_switch_is_half_at_the_threshold_and_monotone():
    f = np.linspace(0, 1, 101, dtype=np.float32)
    a = alveolar_switch(f, 0.4)
    assert abs(float(a[40]) - 0.5) < 1e-6 and np.all(np.diff(a) >= 0)
    assert a[40 - int(4 * SLOPE * 100)] < 0.05 and a[40 + int(4 * SLOPE * 100)] > 0.95


def test_the_tissue_prior_gives_normal_the_switch_and_the_others_its_complement():
    p = np.array([[0.8, 0.2]], np.float32)
    air = np.array([[0.1, 0.9]], np.float32)
    prior = class_prior_of(p, ("tumor", "stroma", "normal"), air)
    np.testing.assert_allclose(prior[:, 0, 0], [0.8 * 0.9, 0.2 * 0.9, 0.2 * 0.1], rtol=1e-6)
    np.testing.assert_allclose(prior[:, 0, 1], [0.2 * 0.1, 0.8 * 0.1, 0.8 * 0.9], rtol=1e-6)


def test_normal_lung_is_airier_than_tumor_and_stroma(wsss4luad_val: Path):
    fractions: dict[int, list[np.ndarray]] = {TUMOR: [], STROMA: [], NORMAL: []}
    for f in sorted((wsss4luad_val / "img").glob("*.png")):
        rgb, gt = load_rgb(f), load_mask(wsss4luad_val / "mask" / f.name)
        d = glass_fraction(rgb, mpp=1.0)
        for c in fractions:
            fractions[c].append(d[gt == c])
    med = {c: float(np.median(np.concatenate(v))) for c, v in fractions.items()}
    # measured: normal 0.47, stroma 0.22, tumor 0.26 (per-image medians, docs/training.md)
    assert med[NORMAL] > 0.4 > 0.3 > max(med[TUMOR], med[STROMA])


def test_the_regional_vote_gives_a_wall_inside_normal_lung_the_regions_class():
    from wsss_napari.airiness import regional_vote

    names = ("tumor", "stroma", "normal")
    prob = np.zeros((4, 200, 200), np.float32)
    prob[2], prob[1] = 0.7, 0.2  # normal lung around ...
    prob[1, 90:110, 90:110], prob[2, 90:110, 90:110] = 0.6, 0.3  # ... a stroma-like wall
    prob[0], prob[3] = 0.1, 0.0
    prob[:, :, 180:] = [[[0.0]], [[0.0]], [[0.0]], [[1.0]]]  # glass on the right
    out = regional_vote(prob, names, sigma_px=20.0)
    assert np.argmax(prob[:, 100, 100]) == 1 and np.argmax(out[:, 100, 100]) == 2
    share = lambda q: (q[1] + q[2]) / np.maximum(q[:3].sum(0), 1e-9)  # noqa: E731
    np.testing.assert_allclose(share(out), share(prob), atol=1e-6)  # tumor keeps its share
    np.testing.assert_array_equal(np.argmax(out, 0) == 3, np.argmax(prob, 0) == 3)  # glass
    edge = prob.copy()  # glass narrowly ahead of a stroma-leaning pixel: still glass
    edge[:, 100, 100] = [0.05, 0.35, 0.2, 0.4]
    assert np.argmax(regional_vote(edge, names, sigma_px=20.0)[:, 100, 100]) == 3
    # a wall as wide as the region's sigma keeps its own class
    assert np.argmax(regional_vote(prob, names, sigma_px=2.0)[:, 100, 100]) == 1
    # off, or without both classes: unchanged
    assert regional_vote(prob, names, 0.0) is prob
    assert regional_vote(prob[[0, 1, 3]], ("tumor", "stroma"), 20.0) is not None
    np.testing.assert_array_equal(regional_vote(prob[[0, 1, 3]], ("tumor", "stroma"), 20.0),
                                  prob[[0, 1, 3]])
