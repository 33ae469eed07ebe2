"""Stage-2 training crops: mosaics of single-label patches (exact multi-class images) and
stain jitter (colours move, masks do not)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from wsss_napari.classes import palette_flat
from wsss_napari.params import TrainSegParams
from wsss_napari.train.data import PatchItem
from wsss_napari.train.seg import SegTrainSet


def _item(tmp_path, name, colour, labels, cls):
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[:] = colour
    mask = np.full((32, 32), cls, np.uint8)
    img = tmp_path / f"{name}.png"
    Image.fromarray(rgb).save(img)
    m = Image.fromarray(mask, mode="P")
    m.putpalette(palette_flat())
    m.save(tmp_path / f"{name}-mask.png")
    return PatchItem(img, np.array(labels, np.uint8), tmp_path / f"{name}-mask.png")


def test_mosaic_pixels_keep_their_patch_class(tmp_path):
    items = [_item(tmp_path, "t", (200, 0, 0), [1, 0, 0], 0),
             _item(tmp_path, "s", (0, 200, 0), [0, 1, 0], 1),
             _item(tmp_path, "n", (0, 0, 200), [0, 0, 1], 2),
             _item(tmp_path, "ts", (9, 9, 9), [1, 1, 0], 0)]
    params = TrainSegParams(encoder="test_resnet", crop_size=32, mosaic=1.0, blur=0.0, seed=4,
                            stain_jitter=0.0)
    ds = SegTrainSet(items, params)
    assert ds.single.tolist() == [0, 1, 2]  # the two-class patch is never a tile
    colour_of = {0: 0, 1: 1, 2: 2}
    seen = set()
    for i in range(len(ds)):
        x, m = ds[i]
        assert (x.max(axis=0) > 0).all()  # no pixel of the multi-label patch's colour (9)
        for c, ch in colour_of.items():
            assert (x[ch][m == c] == 200).all()  # each pixel's label is its tile's class
        seen |= set(np.unique(m).tolist())
    assert seen >= {0, 1, 2}
    x0, m0 = SegTrainSet(items, params.replace(mosaic=0.0))[3]
    assert (m0 == 0).all() and (x0 == 9).all()


def test_stain_jitter_changes_colours_not_masks(tmp_path):
    """Stage-2 stain jitter recolours the crop (H&E-like pixels move) and leaves its mask."""
    colours = [(180, 90, 160), (230, 150, 200)]
    items = [_item(tmp_path, "t", colours[0], [1, 0, 0], 0),
             _item(tmp_path, "s", colours[1], [0, 1, 0], 1)]
    params = TrainSegParams(encoder="test_resnet", crop_size=32, blur=0.0, seed=1,
                            stain_jitter=0.0)
    plain = SegTrainSet(items, params)
    jittered = SegTrainSet(items, params.replace(stain_jitter=0.05))
    for i, colour in enumerate(colours):
        (x0, m0), (x1, m1) = plain[i], jittered[i]
        np.testing.assert_array_equal(m0, m1)
        assert (x0 == np.array(colour, np.uint8)[:, None, None]).all()  # off: untouched
        assert np.abs(x1.astype(int) - x0.astype(int)).max() >= 3       # on: recoloured
    assert TrainSegParams().stain_jitter == 0.03  # the default (docs/training.md: measured)
