"""``--mask-from``: 'default' makes masks with the default segmentation model when it is
installed (predict, slide), the CAM model on request; records say which model made them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wsss_napari.cli import main
from wsss_napari.io.export import read_exported_mask
from wsss_napari.models import checkpoint

FLAGS = ["--device", "cpu", "--scales", "1", "--tile-size", "128", "--halo", "16"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny CAM and a tiny segmentation checkpoint (random weights, 1 um/px)."""
    import torch

    from wsss_napari.models.config import ModelConfig
    from wsss_napari.models.registry import build_model

    d = tmp_path_factory.mktemp("mask_from")
    torch.manual_seed(0)
    cam, seg = d / "cam.safetensors", d / "seg.safetensors"
    checkpoint.save_model(build_model(ModelConfig(backbone="test_resnet", input_size=64,
                                                  mpp=1.0)).eval(), cam)
    checkpoint.save_model(build_model(ModelConfig(kind="seg", arch="deeplabv3plus",
                                                  backbone="test_resnet", input_size=64,
                                                  mpp=1.0)).eval(), seg)
    return {"cam": cam, "seg": seg, "dir": d}


@pytest.fixture
def installed(models, monkeypatch):
    """The tiny models stand in for the shipped defaults."""
    monkeypatch.setattr(checkpoint, "default_model_path", lambda: models["cam"])
    monkeypatch.setattr(checkpoint, "default_seg_model_path", lambda: models["seg"])
    return models


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from wsss_napari.sample.synth import make_tissue

    d = tmp_path_factory.mktemp("imgs")
    for i in range(2):
        Image.fromarray(make_tissue(96, 80, seed=i)[0]).save(d / f"im{i}.png")
    return d


def _predict(tmp_path, capsys, images, *extra) -> tuple[int, dict, str]:
    out = tmp_path / "out"
    rc = main(["predict", *extra, str(images), "--out", str(out), "--device", "cpu",
               "--scales", "1"])
    text = capsys.readouterr()
    record = json.loads((out / "predict.run.json").read_text()) if rc == 0 else {}
    return rc, record, text.out + text.err


def test_predict_default_uses_the_segmentation_model_and_says_so(installed, images, tmp_path,
                                                                 capsys):
    rc, record, text = _predict(tmp_path, capsys, images, "default")
    assert rc == 0, text
    assert "masks from the segmentation model seg.safetensors" in text
    assert record["mask_from"] == "seg"
    assert record["model_hash"] == checkpoint.file_hash(installed["seg"])
    assert np.asarray(Image.open(tmp_path / "out" / "im0.png")).shape == (96, 80)


def test_predict_mask_from_cam_uses_the_cam_model(installed, images, tmp_path, capsys):
    rc, record, text = _predict(tmp_path, capsys, images, "default", "--mask-from", "cam")
    assert rc == 0, text
    assert record["mask_from"] == "cam" and "post-processing" in text
    assert record["model_hash"] == checkpoint.file_hash(installed["cam"])


def test_a_cam_file_alone_still_makes_cam_masks(installed, images, tmp_path, capsys):
    rc, record, _ = _predict(tmp_path, capsys, images, str(installed["cam"]))
    assert rc == 0 and record["mask_from"] == "cam"


@pytest.mark.parametrize("case", ["no-default", "cam-as-seg", "seg-as-cam"])
def test_bad_mask_sources_are_one_line(models, monkeypatch, images, tmp_path, capsys, case):
    monkeypatch.setattr(checkpoint, "default_model_path", lambda: models["cam"])
    monkeypatch.setattr(checkpoint, "default_seg_model_path",
                        lambda: models["dir"] / "missing.safetensors")
    args, needle = {
        "no-default": (["default", "--mask-from", "seg"], "no segmentation model"),
        "cam-as-seg": (["default", "--seg-model", str(models["cam"])],
                       "is a cam model, not a segmentation model"),
        "seg-as-cam": ([str(models["seg"]), "--mask-from", "cam"],
                       "is a segmentation model"),
    }[case]
    rc, _, text = _predict(tmp_path, capsys, images, *args)
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and needle in lines[0], text
    assert not (tmp_path / "out").exists()  # nothing written


def test_predict_default_without_a_seg_model_falls_back_to_cams(models, monkeypatch, images,
                                                                 tmp_path, capsys):
    monkeypatch.setattr(checkpoint, "default_model_path", lambda: models["cam"])
    monkeypatch.setattr(checkpoint, "default_seg_model_path",
                        lambda: models["dir"] / "missing.safetensors")
    rc, record, _ = _predict(tmp_path, capsys, images, "default")
    assert rc == 0 and record["mask_from"] == "cam"


def test_slide_masks_from_seg_and_cam_share_one_grid(installed, tmp_path, capsys, monkeypatch):
    from wsss_napari.sample.synth import write_pyramidal_tiff

    monkeypatch.setenv("WSSS_CACHE_DIR", str(tmp_path / "cache"))
    slide = write_pyramidal_tiff(tmp_path / "s.tif", 384, 448, seed=2, mpp=0.5)
    region = ["--region", "32", "64", "256", "320"]
    outs = {}
    for how in ("seg", "cam"):
        out = tmp_path / how
        rc = main(["slide", str(slide), "--out", str(out), "--mask-from", how, *region, *FLAGS])
        text = capsys.readouterr().out
        assert rc == 0, text
        assert f"mask from: {how}" in text
        report = json.loads((out / "s.report.json").read_text())
        done = json.loads((out / "s.done.json").read_text())
        assert report["mask_from"] == how == done["record"]["mask_from"]
        assert report["model_hash"] == checkpoint.file_hash(installed[how])
        outs[how] = read_exported_mask(out / "s.mask.ome.tif")
    (seg, seg_meta), (cam, cam_meta) = outs["seg"], outs["cam"]
    assert seg.shape == cam.shape == (32, 40)  # 256 x 320 level-0 px at 8 px per map px
    assert seg_meta["geometry"] == cam_meta["geometry"]
    assert (seg_meta["geometry"].y, seg_meta["geometry"].x) == (32, 64)
    # a rerun with the same choice is skipped; switching the choice recomputes
    rc = main(["slide", str(slide), "--out", str(tmp_path / "seg"), *region, *FLAGS])
    assert rc == 0 and "skipped" in capsys.readouterr().out
    assert Path(tmp_path / "seg" / "s.done.json").is_file()
