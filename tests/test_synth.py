"""The synthetic H&E generator: deterministic, class-faithful, patch labels, pyramidal TIFF."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from wsss_napari.classes import BACKGROUND, NORMAL, STROMA, TUMOR, palette_flat
from wsss_napari.sample import synth

CHALLENGE_NAME = re.compile(r"^(.+)-\[([01]), ([01]), ([01])\]\.png$")


@pytest.fixture(scope="module")
def tissue():
    return synth.make_tissue(1536, 1536, seed=3)


def test_make_tissue_is_deterministic_by_seed():
    a = synth.make_tissue(300, 420, seed=5)
    b = synth.make_tissue(300, 420, seed=5)
    c = synth.make_tissue(300, 420, seed=6)
    assert a[0].shape == (300, 420, 3) and a[0].dtype == np.uint8
    assert a[1].shape == (300, 420) and a[1].dtype == np.uint8
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_all_classes_present_with_h_and_e_colours(tissue):
    rgb, mask = tissue
    assert set(np.unique(mask)) == {TUMOR, STROMA, NORMAL, BACKGROUND}
    mean = {c: rgb[mask == c].reshape(-1, 3).mean(0) for c in range(4)}
    grey = {c: mean[c].mean() for c in range(4)}
    # tumor is the darkest (dense hematoxylin), glass the brightest and nearly neutral
    assert grey[TUMOR] < grey[STROMA] < grey[BACKGROUND]
    assert grey[TUMOR] < grey[NORMAL] < grey[BACKGROUND]
    tissue_classes = synth.mask_region(3, 1536, 1536, 0, 0, 1536, 1536, white_as_background=False)
    glass = rgb[tissue_classes == BACKGROUND].astype(int)
    assert 235 <= glass.min() and glass.max() <= 250 and np.ptp(glass.mean(0)) < 3
    # stroma is eosin pink: red well above green
    assert mean[STROMA][0] - mean[STROMA][1] > 40
    # normal lung: mostly pale air spaces with thin septa
    normal_grey = rgb[tissue_classes == NORMAL].mean(-1)
    assert (normal_grey > 225).mean() > 0.5 and (normal_grey < 210).mean() > 0.05


@pytest.mark.parametrize("ds", [1, 4])
def test_white_space_in_tissue_is_background_as_in_wsss4luad(ds):
    """Challenge masks label air spaces and lumens background: only a few % of tumor /
    stroma / normal pixels are white (grey > 210) while most background pixels are."""
    n = 1536 // ds
    rgb, mask = synth.render_region(3, 1536, 1536, 0, 0, n, n, ds=ds)
    tissue_classes = synth.mask_region(3, 1536, 1536, 0, 0, n, n, ds=ds,
                                       white_as_background=False)
    assert np.array_equal(mask, synth.mask_region(3, 1536, 1536, 0, 0, n, n, ds=ds))
    grey = rgb @ np.array([0.299, 0.587, 0.114])
    assert (grey[mask < BACKGROUND] > 210).mean() < 0.04
    assert (grey[mask == BACKGROUND] > 210).mean() > 0.8
    # only white space changes: air inside normal, lumens inside tumor; stroma keeps all
    changed = mask != tissue_classes
    assert set(np.unique(mask[changed])) == {BACKGROUND}
    assert set(np.unique(tissue_classes[changed])) == {TUMOR, NORMAL}
    assert (mask[tissue_classes == NORMAL] == BACKGROUND).mean() > 0.5
    assert 0.02 < (mask[tissue_classes == TUMOR] == BACKGROUND).mean() < 0.3
    assert (mask[tissue_classes == NORMAL] == NORMAL).mean() > 0.05  # the septa stay normal


def test_regions_render_the_same_whatever_the_tiling(tissue):
    rgb, mask = tissue
    for y, x, h, w in [(0, 0, 512, 512), (700, 900, 300, 500), (1000, 1000, 536, 536)]:
        r, m = synth.render_region(3, 1536, 1536, y, x, h, w)
        assert np.array_equal(r, rgb[y : y + h, x : x + w])
        assert np.array_equal(m, mask[y : y + h, x : x + w])
    assert np.array_equal(synth.mask_region(3, 1536, 1536, 10, 20, 64, 64), mask[10:74, 20:84])


def test_patch_labels_are_the_tissue_classes_covering_two_percent():
    patches = synth.make_patches(40, size=160, seed=1)
    assert len(patches) == 40
    multi = 0
    sparse_normal = 0
    for rgb, mask, labels in patches:
        assert rgb.shape == (160, 160, 3) and mask.shape == (160, 160)
        frac = np.bincount(mask.ravel(), minlength=4)[:3] / mask.size
        # labels come from the tissue (air spaces count for normal), so they include every
        # class covering 2 % of the mask, and tumor / stroma only when the mask shows them
        assert np.all(labels >= (frac >= 0.02))
        assert np.all(labels[:2] <= (frac[:2] > 0))
        assert labels.any()
        multi += labels.sum() > 1
        sparse_normal += labels[NORMAL] and frac[NORMAL] < 0.02 * 5
    assert 0 < multi < 40  # a mix of single- and multi-label patches, as in WSSS4LUAD
    assert sparse_normal  # alveoli labelled normal though most of their pixels are air


def test_patch_dataset_uses_the_challenge_layout(tmp_path):
    out = synth.write_patch_dataset(tmp_path / "train", 6, size=96, seed=4)
    names = sorted(p.name for p in out.glob("*.png"))
    assert len(names) == 6
    for name in names:
        m = CHALLENGE_NAME.match(name)
        assert m and m.group(1).startswith("4-")
        mask_img = Image.open(out / "masks" / name)
        assert mask_img.mode == "P" and mask_img.getpalette()[:12] == palette_flat()[:12]
        mask = np.asarray(mask_img)
        labels = np.array([int(g) for g in m.groups()[1:]])
        assert np.all(labels >= synth.labels_of(mask))  # labels from the tissue classes
        assert np.asarray(Image.open(out / name)).shape == (96, 96, 3)


def test_pyramidal_tiff_levels_tiles_resolution(tmp_path):
    import tifffile

    path = synth.write_pyramidal_tiff(tmp_path / "s.tif", 1200, 2100, seed=2, tile=256, mpp=0.25)
    with tifffile.TiffFile(path) as tf:
        series = tf.series[0]
        shapes = [lv.shape for lv in series.levels]
        page = tf.pages[0]
        assert shapes[0] == (1200, 2100, 3) and shapes[1] == (600, 1050, 3)
        assert max(shapes[-1][:2]) <= 256
        assert page.is_tiled and page.tilewidth == 256 and page.compression == 7  # JPEG
        assert page.tags["XResolution"].value == (40000, 1)
        level0 = series.levels[0].asarray()
        level1 = series.levels[1].asarray()
    rgb, _ = synth.make_tissue(1200, 2100, seed=2)
    assert np.abs(level0.astype(int) - rgb).mean() < 6  # the same slide, up to JPEG loss
    low, _ = synth.render_region(2, 1200, 2100, 0, 0, 600, 1050, ds=2)
    assert np.abs(level1.astype(int) - low).mean() < 6


def test_bad_requests_are_refused(tmp_path):
    from wsss_napari import WsssError

    with pytest.raises(WsssError):
        synth.make_tissue(0, 10)
    with pytest.raises(WsssError):
        synth.render_region(0, 100, 100, 0, 0, 10, 10, ds=3)
    with pytest.raises(WsssError):
        synth.write_pyramidal_tiff(tmp_path / "x.tif", 100, 100, tile=100)
