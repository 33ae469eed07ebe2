"""Stage 2: pseudo-masks from a CAM model, then a tiny segmentation run, via API and CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wsss_napari.cli import main
from wsss_napari.models.cam import CamNet
from wsss_napari.models.checkpoint import load_model, save_model
from wsss_napari.models.config import ModelConfig
from wsss_napari.models.seg import SegNet
from wsss_napari.params import CamParams, PostprocParams, TrainSegParams
from wsss_napari.progress import run_to_end
from wsss_napari.sample.synth import write_patch_dataset
from wsss_napari.train.data import labels_from_filename, list_images
from wsss_napari.train.loop import state_path
from wsss_napari.train.pseudo import make_pseudo_masks
from wsss_napari.train.seg import dice_loss, train_segmenter

TINY = TrainSegParams(encoder="test_resnet", epochs=2, batch_size=4, crop_size=48, seed=2)


@pytest.fixture(scope="module")
def patches(tmp_path_factory) -> Path:
    return write_patch_dataset(tmp_path_factory.mktemp("seg_patches"), 12, size=64, seed=9)


@pytest.fixture(scope="module")
def cam_model(tmp_path_factory) -> Path:
    import torch

    torch.manual_seed(0)
    model = CamNet(ModelConfig(backbone="test_resnet", input_size=64)).eval()
    path = tmp_path_factory.mktemp("cam") / "cam.safetensors"
    save_model(model, path)
    return path


def test_pseudo_masks_respect_each_patch_labels(patches, cam_model, tmp_path):
    model = load_model(cam_model)
    out = run_to_end(make_pseudo_masks(model, patches, tmp_path / "masks",
                                       CamParams(scales=(1.0,), device="cpu"),
                                       PostprocParams(min_region=0)))
    images = list_images(patches)
    masks = sorted(p for p in out.iterdir() if p.suffix == ".png")
    assert [m.name for m in masks] == [p.name for p in images]
    assert (out / "pseudo.run.json").is_file()
    for img, m in zip(images, masks, strict=True):
        with Image.open(m) as im:
            assert im.mode == "P"
            arr = np.asarray(im)
        assert arr.shape == (64, 64) and arr.max() <= 3
        labels = labels_from_filename(img)
        for c in range(3):
            if not labels[c]:
                assert not (arr == c).any(), f"{img.name}: absent class {c} in its mask"


def test_train_on_masks_gives_a_loadable_segnet_and_resumes(patches, tmp_path):
    out = tmp_path / "seg.safetensors"
    gen = train_segmenter(patches, patches / "masks", out, TINY)
    for tick in gen:
        if "val_miou" in tick.info:
            gen.close()  # interrupted after epoch 1
            break
    assert state_path(out).is_file()
    ticks = list(_ticks(train_segmenter(patches, patches / "masks", out, TINY, resume=True)))
    assert {t.info["epoch"] for t in ticks} == {2}
    model = load_model(out)
    assert isinstance(model, SegNet) and model.config.kind == "seg"
    assert [h["epoch"] for h in model.config.extra["history"]] == [1, 2]


def test_cli_pseudo_then_train_seg(patches, cam_model, tmp_path):
    masks = tmp_path / "pseudo"
    assert main(["pseudo", str(cam_model), str(patches), "--out", str(masks),
                 "--scales", "1.0", "--device", "cpu"]) == 0
    out = tmp_path / "seg.safetensors"
    assert main(["train-seg", str(patches), str(masks), "--out", str(out),
                 "--encoder", "test_resnet", "--decoder", "unet", "--epochs", "1",
                 "--batch-size", "4", "--crop-size", "32", "--half"]) == 0
    model = load_model(out)
    assert model.config.arch == "unet" and not state_path(out).exists()
    # the model keeps what made its training labels (pseudo.run.json)
    pseudo = model.config.extra["pseudo"]
    assert pseudo["model_hash"] == load_model(cam_model).file_hash
    assert pseudo["params"]["postproc"]["min_region"] == PostprocParams().min_region


def test_cli_pseudo_uses_the_models_recommended_postprocessing(patches, cam_model, tmp_path):
    """Like ``predict``: the tuned parameters stored in the checkpoint, unless --config."""
    import json
    import shutil

    from wsss_napari.models.checkpoint import with_recommended_postproc

    model = tmp_path / "tuned.safetensors"
    shutil.copy(cam_model, model)
    tuned = PostprocParams(bg_exponent=7.0, min_region=5)
    with_recommended_postproc(model, tuned)
    args = ["--scales", "1.0", "--device", "cpu"]
    assert main(["pseudo", str(model), str(patches), "--out", str(tmp_path / "a"), *args]) == 0
    used = json.loads((tmp_path / "a" / "pseudo.run.json").read_text())["params"]["postproc"]
    assert used["bg_exponent"] == 7.0 and used["min_region"] == 5
    cfg = tmp_path / "post.json"
    cfg.write_text(json.dumps({"postproc": {"bg_exponent": 2.0}}))
    assert main(["pseudo", str(model), str(patches), "--out", str(tmp_path / "b"),
                 "--config", str(cfg), "--min-region", "9", *args]) == 0
    used = json.loads((tmp_path / "b" / "pseudo.run.json").read_text())["params"]["postproc"]
    assert used["bg_exponent"] == 2.0 and used["min_region"] == 9


def test_dice_loss_is_zero_for_a_perfect_prediction():
    import torch

    target = torch.tensor([[[0, 1], [3, 255]]])
    logits = torch.nn.functional.one_hot(target.clamp(max=3), 4).permute(0, 3, 1, 2) * 50.0
    assert float(dice_loss(logits, target)) < 1e-3


def _ticks(gen):
    while True:
        try:
            yield next(gen)
        except StopIteration:
            return


def test_cli_pseudo_exact_single_labels_tissue_without_the_model(cam_model, tmp_path):
    """A single-label patch's mask is its class on every tissue pixel and background exactly
    on the glass drawn into it; a multi-label patch still goes through the model."""
    data = tmp_path / "patches"
    data.mkdir()
    rng = np.random.default_rng(0)
    tissue = np.stack([rng.integers(150, 200, (64, 64)), rng.integers(60, 120, (64, 64)),
                       rng.integers(130, 190, (64, 64))], axis=-1).astype(np.uint8)
    single = tissue.copy()
    single[8:40, 16:48] = 250  # glass: 32 x 32 px, above the default threshold (210)
    Image.fromarray(single).save(data / "a-[0, 1, 0].png")
    Image.fromarray(tissue).save(data / "b-[1, 1, 0].png")
    masks = tmp_path / "pseudo"
    # bg exponent 0.01: the model's own masks would be background on nearly all tissue
    assert main(["pseudo", str(cam_model), str(data), "--out", str(masks), "--scales", "1.0",
                 "--device", "cpu", "--bg-exponent", "0.01",
                 "--exact-single"]) == 0
    a = np.asarray(Image.open(masks / "a-[0, 1, 0].png"))
    expected = np.full((64, 64), 1, np.uint8)
    expected[8:40, 16:48] = 3
    np.testing.assert_array_equal(a, expected)
    b = np.asarray(Image.open(masks / "b-[1, 1, 0].png"))
    assert b.shape == (64, 64) and not (b == 2).any()


def test_pseudo_with_a_segmentation_model_keeps_each_patch_to_its_labels(patches, tmp_path):
    """Self-training: a stage-2 model relabels labelled patches; a class a patch is not
    labelled with never appears, and the labelled classes take what the model gives them."""
    import torch

    from wsss_napari.inference.predict import seg_probabilities

    torch.manual_seed(0)
    net = SegNet(ModelConfig(kind="seg", arch="unet", backbone="test_resnet", input_size=64))
    path = tmp_path / "seg.safetensors"
    save_model(net.eval(), path)
    masks = tmp_path / "relabelled"
    assert main(["pseudo", str(path), str(patches), "--out", str(masks), "--device", "cpu"]) == 0
    model = load_model(path)
    images = list_images(patches)
    restricted = 0
    for img in images:
        arr = np.asarray(Image.open(masks / (img.stem + ".png")))
        labels = np.asarray(labels_from_filename(img), bool)
        prob = seg_probabilities(model, np.asarray(Image.open(img).convert("RGB")),
                                 CamParams(device="cpu"))
        for c in range(3):
            if not labels[c]:
                assert not (arr == c).any(), f"{img.name}: absent class {c} in its mask"
        # where the unrestricted argmax is a labelled class or background, nothing changes
        free = np.argmax(prob, axis=0)
        keep = np.isin(free, [*np.flatnonzero(labels), 3])
        np.testing.assert_array_equal(arr[keep], free[keep])
        restricted += int((~keep).sum())
    assert restricted > 0  # the untrained model does call absent classes somewhere
