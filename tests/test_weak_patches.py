"""Weak labels from masks: patches labelled only with the classes they contain."""

from __future__ import annotations

import numpy as np
from PIL import Image

from wsss_napari.cli import main
from wsss_napari.models.checkpoint import load_model
from wsss_napari.progress import run_to_end
from wsss_napari.train.data import load_rgb, scan_patches
from wsss_napari.train.weak import cut_weak_patches, write_weak_patches


def test_labels_are_the_classes_covering_two_percent():
    gt = np.full((8, 8), 3, np.uint8)
    gt[:, :4] = 0  # tumor: half
    gt[0, 4] = 2  # normal: 1 of 64 pixels = 1.6 % -> not in the label
    gt[4:, 4:] = 1  # stroma: a quarter
    rgb = np.zeros((8, 8, 3), np.uint8)
    (y, x, patch, labels), = cut_weak_patches(rgb, gt, size=8, stride=8)
    assert (y, x, patch.shape) == (0, 0, (8, 8, 3)) and labels.tolist() == [1, 1, 0]
    gt[:, 4:] = 3  # half glass is fine, > 80 % glass is not
    assert len(cut_weak_patches(rgb, gt, size=8, stride=8)) == 1
    gt[:, 1:] = 3
    assert cut_weak_patches(rgb, gt, size=8, stride=8) == []


def test_real_images_give_patches_whose_names_carry_their_labels(wsss4luad_val, tmp_path):
    root = tmp_path / "val"
    for sub in ("img", "mask"):
        (root / sub).mkdir(parents=True)
        for name in ("00.png", "01.png"):
            (root / sub / name).symlink_to(wsss4luad_val / sub / name)
    out = run_to_end(write_weak_patches(root, tmp_path / "patches", size=128, stride=64))
    report = scan_patches(out)
    assert all(p.path is None for p in report.problems)  # (no normal in these two)
    assert len(report.items) > 4
    gt = np.asarray(Image.open(wsss4luad_val / "mask" / "01.png"))
    rgb = np.asarray(Image.open(wsss4luad_val / "img" / "01.png").convert("RGB"))
    item = next(it for it in report.items if it.path.name.startswith("01-64-64-"))
    m = gt[64:192, 64:192]
    expect = [int((m == c).mean() >= 0.02) for c in range(3)]
    assert list(item.labels) == expect
    assert np.array_equal(load_rgb(item.path), rgb[64:192, 64:192])


def test_cli_train_cls_from_masks(tmp_path):
    from wsss_napari.sample.synth import make_tissue

    root = tmp_path / "set"
    (root / "img").mkdir(parents=True)
    (root / "mask").mkdir()
    for i in range(2):
        rgb, gt = make_tissue(320, 320, seed=i)
        Image.fromarray(rgb).save(root / "img" / f"{i}.png")
        Image.fromarray(gt).save(root / "mask" / f"{i}.png")
    out = tmp_path / "m.safetensors"
    rc = main(["train-cls", str(tmp_path / "patches"), "--from-masks", str(root),
               "--patch-size", "64", "--patch-stride", "64", "--out", str(out),
               "--backbone", "test_resnet", "--no-pretrained", "--epochs", "1",
               "--crop-size", "32",
               "--batch-size", "4"])
    assert rc == 0
    assert "labelled by the classes" in load_model(out).config.extra["data"]
    assert len(list((tmp_path / "patches").glob("*-[[]*].png"))) >= 8
    rc = main(["train-cls", "--from-masks", str(tmp_path / "nothing"), "--out", str(out)])
    assert rc != 0
