"""The shipped default segmentation model (stage 2 of the default CAM model): small, remade by
the documented script's stage-2 part whose flags are stored in it, and it segments real H&E."""

from __future__ import annotations

import shlex
from pathlib import Path

import numpy as np
import pytest

from wsss_napari.inference.mask_source import resolve_mask_source
from wsss_napari.inference.predict import predict_mask
from wsss_napari.metrics import confusion_matrix, iou_report
from wsss_napari.models.checkpoint import default_model_path, default_seg_model_path, load_model
from wsss_napari.params import CamParams, TrainSegParams
from wsss_napari.train.data import load_mask, load_rgb

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "make_default_model.sh"


@pytest.fixture(scope="module")
def seg_model():
    if not default_seg_model_path().is_file():
        pytest.skip("the default segmentation model is not installed")
    return load_model(default_seg_model_path())


def _train_seg_flags() -> list[str]:
    """The train-seg command line of the remake script (continuation lines joined, the
    script's variables filled in)."""
    text = SCRIPT.read_text().replace("\\\n", " ")
    epochs = next(ln.split("=", 1)[1] for ln in text.splitlines()
                  if ln.startswith("SEG_EPOCHS="))
    line = next(ln for ln in text.splitlines() if ln.strip().startswith("wsss-napari train-seg"))
    line = line.replace('"$SEG_EPOCHS"', epochs).replace('"$M"', "cam.safetensors")
    line = line.replace('"$SEED"', "0").replace('"$W/seg$SEED.safetensors"', "seg.safetensors")
    return [a for a in shlex.split(line)[2:] if not a.startswith("$")]


def test_default_seg_model_is_small_documented_and_remade_by_the_script(seg_model):
    from wsss_napari.models.ensemble import MEMBERS_KEY, ensemble_size

    path = default_seg_model_path()
    assert path.stat().st_size < 20 * 1024**2
    seeds = next(ln.split("=", 1)[1].strip('"') for ln in SCRIPT.read_text().splitlines()
                 if ln.startswith("SEG_SEEDS="))
    # an ensemble of the script's train-seg runs, one per seed (the first member's params)
    assert ensemble_size(seg_model.config) == len(seeds.split()) >= 2
    assert len(seg_model.config.extra[MEMBERS_KEY]) == len(seeds.split())
    card = (path.parent / "MODEL_CARD.md").read_text()
    assert "seg_default.safetensors" in card and "--stage2-only" in card
    cfg, cam_cfg = seg_model.config, load_model("default").config
    assert cfg.kind == "seg" and cfg.backbone == "tf_efficientnet_lite0"
    assert cfg.mpp == cam_cfg.mpp and cfg.mean == cam_cfg.mean and cfg.std == cam_cfg.std
    from wsss_napari.cli import build_parser
    from wsss_napari.cli._params import params_from_args

    args = build_parser().parse_args(["train-seg", "patches", "pseudo", *_train_seg_flags()])
    expected = params_from_args(args, TrainSegParams).to_dict()
    stored = cfg.extra["train"]
    skip = {"weights"}  # a path: the script's CAM model, wherever the checkout is
    assert {k: expected[k] for k in stored if k not in skip} == {
        k: v for k, v in stored.items() if k not in skip}
    assert Path(stored["weights"]).name == default_model_path().name
    # 'default' now makes masks with it; the CAM model still gives the CAMs
    src = resolve_mask_source("default")
    assert src.kind == "seg" and Path(src.model) == path and src.cam_model == "default"


def test_default_seg_model_segments_real_he(seg_model, wsss4luad_val):
    names = ["00", "03", "05", "06", "09", "19"]  # in the training set: a sanity check only
    conf = np.zeros((4, 4), np.int64)
    for n in names:
        rgb = load_rgb(wsss4luad_val / "img" / f"{n}.png")
        gt = load_mask(wsss4luad_val / "mask" / f"{n}.png")
        pred = predict_mask(seg_model, rgb, CamParams(device="cpu"), background=gt == 3)
        conf += confusion_matrix(pred, gt)
    report = iou_report(conf)
    assert report["miou"] > 0.4, report["iou"]
