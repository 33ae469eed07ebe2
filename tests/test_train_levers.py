"""Training levers: uncertain pseudo-label pixels ignored, 90-degree rotations, balanced
sampling of rare classes."""

from __future__ import annotations

import numpy as np

from wsss_napari.params import TrainClsParams
from wsss_napari.train.augment import random_rot90
from wsss_napari.train.cls import ClsTrainSet, balance_weights
from wsss_napari.train.data import PatchItem
from wsss_napari.train.pseudo import mark_uncertain


def test_pixels_with_a_small_cam_margin_become_ignore():
    cams = np.zeros((3, 2, 3), np.float32)
    cams[0] = [[0.9, 0.5, 0.2], [0.9, 0.9, 0.9]]
    cams[1] = [[0.1, 0.45, 0.8], [0.1, 0.1, 0.1]]
    cams[2] = 0.95  # absent from the patch: never counts
    mask = np.array([[0, 0, 1], [0, 0, 3]], np.uint8)
    out = mark_uncertain(mask, cams, np.array([1, 1, 0], bool), margin=0.1)
    assert out.tolist() == [[0, 255, 1], [0, 0, 3]]
    assert mask[0, 1] == 0  # the input is not modified


def test_single_label_patches_are_never_uncertain():
    cams = np.full((3, 4, 4), 0.5, np.float32)
    mask = np.ones((4, 4), np.uint8)
    assert np.array_equal(mark_uncertain(mask, cams, np.array([0, 1, 0], bool), 0.3), mask)


def test_rot90_moves_the_mask_with_the_image():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (5, 7, 3), dtype=np.uint8)
    mask = rgb[..., 0] // 64
    shapes = set()
    for _ in range(12):
        r, m = random_rot90(rgb, mask, rng)
        assert np.array_equal(m, r[..., 0] // 64)
        shapes.add(r.shape[:2])
    assert shapes == {(5, 7), (7, 5)}


def test_balanced_sampling_draws_rare_classes_more_often(tmp_path):
    labels = np.array([[1, 0, 0]] * 8 + [[0, 1, 0]] * 4 + [[0, 0, 1], [1, 0, 1]])
    w = balance_weights(labels)
    assert np.isclose(w.sum(), 1.0) and w[-1] == w[12] > w[8] > w[0]
    items = [PatchItem(tmp_path / f"{i}.png", tuple(int(v) for v in lab), None)
             for i, lab in enumerate(labels)]
    ds = ClsTrainSet(items, TrainClsParams(balance=True, seed=3))
    drawn = [ds.sample_index(i) for i in range(len(ds))]
    assert drawn == [ds.sample_index(i) for i in range(len(ds))]  # fixed within an epoch
    assert ClsTrainSet(items, TrainClsParams()).sample_index(5) == 5  # off by default
    ds.epoch = 1
    assert [ds.sample_index(i) for i in range(len(ds))] != drawn


def test_stage_two_draws_patches_of_rare_classes_more_often(tmp_path):
    from PIL import Image

    from wsss_napari.params import TrainSegParams
    from wsss_napari.train.seg import SegTrainSet

    items = []
    for i in range(6):  # five tumor patches and one of normal lung, each its own grey
        labels = (0, 0, 1) if i == 5 else (1, 0, 0)
        Image.fromarray(np.full((32, 32, 3), 20 * i, np.uint8)).save(tmp_path / f"{i}.png")
        Image.fromarray(np.full((32, 32), 2 if i == 5 else 0, np.uint8)).save(
            tmp_path / f"{i}_mask.png")
        items.append(PatchItem(tmp_path / f"{i}.png", labels, tmp_path / f"{i}_mask.png"))
    params = TrainSegParams(crop_size=32, blur=0.0, stain_jitter=0.0, seed=1)

    def normal_draws(ds) -> int:
        n = 0
        for epoch in range(20):
            ds.epoch = epoch
            n += sum(int(ds[i][1][0, 0] == 2) for i in range(len(ds)))
        return n

    assert normal_draws(SegTrainSet(items, params)) == 20  # once per epoch, as listed
    # 1/sqrt(positives): normal's patch is drawn with p = 1 / (1 + 5 / sqrt(5)) = 0.31
    assert normal_draws(SegTrainSet(items, params.replace(balance=True))) > 28
    assert normal_draws(SegTrainSet(items, params.replace(balance=True), train=False)) == 20
