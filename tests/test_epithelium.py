"""The epithelium prior: SHELL's pretrained epithelium network on real WSSS4LUAD tissue, and
its fusion into the pseudo-masks of patches labelled with tumor and stroma."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from wsss_napari import WsssError
from wsss_napari.classes import BACKGROUND, NORMAL, STROMA, TUMOR
from wsss_napari.epithelium import epithelium_available, fuse_prior
from wsss_napari.models.cam import CamNet
from wsss_napari.models.checkpoint import load_model, save_model
from wsss_napari.models.config import ModelConfig
from wsss_napari.params import CamParams, PostprocParams
from wsss_napari.progress import run_to_end
from wsss_napari.train.data import items_from_arrays, load_mask, load_rgb
from wsss_napari.train.pseudo import make_pseudo_masks
from wsss_napari.train.weak import cut_weak_patches

needs_prior = pytest.mark.skipif(epithelium_available() is not None,
                                 reason=str(epithelium_available()))


def test_fuse_prior_moves_foreground_only_between_the_patch_labels():
    mask = np.array([[TUMOR, TUMOR, BACKGROUND, STROMA]], np.uint8)
    cams = np.full((3, 1, 4), 0.5, np.float32)
    cams[TUMOR] = 0.6  # the CAMs say tumor everywhere
    prior = np.stack([np.array([[0.9, 0.05, 0.05, 0.05]])] * 3).astype(np.float32)
    prior[STROMA] = prior[NORMAL] = 1 - prior[TUMOR]
    present = np.array([True, True, False])
    out = fuse_prior(mask, cams, prior, present, 1.0)
    # epithelium keeps tumor, non-epithelium becomes stroma (never the absent normal),
    # and background stays background
    assert out.tolist() == [[TUMOR, STROMA, BACKGROUND, STROMA]]
    assert fuse_prior(mask, cams, prior, present, 0.0) is mask
    single = np.array([True, False, False])
    assert fuse_prior(mask, cams, prior, single, 1.0) is mask


@pytest.fixture(scope="module")
def mixed_image(wsss4luad_val: Path):
    """A real WSSS4LUAD image with tumor and stroma, and its mask."""
    name = "04.png"
    rgb, gt = load_rgb(wsss4luad_val / "img" / name), load_mask(wsss4luad_val / "mask" / name)
    assert {TUMOR, STROMA} <= set(np.unique(gt).tolist())
    return rgb, gt


@needs_prior
def test_epithelium_probability_is_high_on_tumor_and_low_on_stroma(mixed_image):
    from wsss_napari.epithelium import load_epithelium_prior

    rgb, gt = mixed_image
    p = load_epithelium_prior().probability(rgb, mpp=1.0)
    assert p.shape == gt.shape and p.dtype == np.float32
    assert 0.0 <= p.min() and p.max() <= 1.0
    assert p[gt == TUMOR].mean() > p[gt == STROMA].mean() + 0.3


@needs_prior
def test_epithelium_prior_refuses_bad_input():
    from wsss_napari.epithelium import load_epithelium_prior

    prior = load_epithelium_prior()
    with pytest.raises(WsssError, match="RGB uint8"):
        prior.probability(np.zeros((64, 64, 3), np.float32), 1.0)
    with pytest.raises(WsssError, match="microns per pixel"):
        prior.probability(np.zeros((64, 64, 3), np.uint8), 0.0)
    # glass only: no stain to estimate, so no prior (and no crash)
    assert prior.probability(np.full((128, 128, 3), 245, np.uint8), 1.0) is None


@needs_prior
def test_pseudo_masks_follow_the_prior_in_mixed_patches(mixed_image, tmp_path):
    import torch

    rgb, gt = mixed_image
    cut = [(p, gt[y:y + 128, x:x + 128], lab)
           for y, x, p, lab in cut_weak_patches(rgb, gt, 128, 128)][:8]
    assert any(lab.sum() >= 2 for *_, lab in cut)
    items = items_from_arrays([(p, None, lab) for p, _, lab in cut], tmp_path / "patches")
    torch.manual_seed(0)
    path = tmp_path / "cam.safetensors"
    save_model(CamNet(ModelConfig(backbone="test_resnet", input_size=64)).eval(), path)
    model = load_model(path)  # untrained: its CAMs know nothing of tumor or stroma
    cam, post = CamParams(scales=(1.0,), device="cpu"), PostprocParams(min_region=0)
    plain = run_to_end(make_pseudo_masks(model, items, tmp_path / "plain", cam, post))
    fused = run_to_end(make_pseudo_masks(model, items, tmp_path / "epi", cam, post,
                                         cam_epithelium=8.0))
    right = {"plain": 0, "epi": 0}
    n = 0
    for it, (_, g, lab) in zip(items, cut, strict=True):
        name = it.path.stem + ".png"
        a, b = load_mask(plain / name), load_mask(fused / name)
        if lab.sum() < 2:
            assert np.array_equal(a, b)  # single-label patches never see the prior
            continue
        assert set(np.unique(b).tolist()) <= {*np.flatnonzero(lab).tolist(), BACKGROUND}
        ts = np.isin(g, (TUMOR, STROMA)) & (b != BACKGROUND)
        right["plain"] += int((a[ts] == g[ts]).sum())
        right["epi"] += int((b[ts] == g[ts]).sum())
        n += int(ts.sum())
    # the prior, not the untrained CAMs, now separates tumor from stroma
    # (measured on 04.png: 0.68 -> 0.78 of the tumor / stroma pixels right)
    assert right["epi"] / n > 0.72 and right["epi"] > right["plain"] + 0.05 * n
    record = json.loads((fused / "pseudo.run.json").read_text())
    assert record["params"]["cam_epithelium"]["weight"] == 8.0
    # CamParams.epithelium is for segmentation models' masks: a CAM model's record says 0
    assert record["params"]["cam"]["epithelium"] == 0.0 and record["mask_from"] == "cam"
    assert record["params"]["cam"]["context_um"] == 0.0  # nor the regional vote
    assert "cam_epithelium" not in json.loads((plain / "pseudo.run.json").read_text())["params"]


def test_cli_pseudo_refuses_a_negative_prior_weight_and_writes_nothing(tmp_path, capsys):
    from wsss_napari.cli import main

    rng = np.random.default_rng(0)
    items_from_arrays([(rng.integers(0, 255, (64, 64, 3), np.uint8), None,
                        np.array([1, 1, 0]))], tmp_path / "patches")
    save_model(CamNet(ModelConfig(backbone="test_resnet", input_size=64)).eval(),
               tmp_path / "cam.safetensors")
    out = tmp_path / "masks"
    assert main(["pseudo", str(tmp_path / "cam.safetensors"), str(tmp_path / "patches"),
                 "--out", str(out), "--device", "cpu", "--cam-epithelium", "-1"]) == 2
    assert "epithelium prior's weight" in capsys.readouterr().err
    assert not list(out.glob("*.png"))


def test_reweighting_moves_tissue_between_classes_never_to_or_from_glass():
    from wsss_napari.epithelium import class_prior_of, reweight_tissue

    rng = np.random.default_rng(1)
    prob = rng.dirichlet(np.ones(4), size=(5, 7)).transpose(2, 0, 1).astype(np.float32)
    p = rng.uniform(0, 1, (5, 7)).astype(np.float32)
    out = reweight_tissue(prob, class_prior_of(p, ("tumor", "stroma", "normal")), 1.0)
    assert np.allclose(out.sum(0), 1.0)
    # tissue or glass: the same decision for every pixel
    assert np.array_equal(out.argmax(0) == 3, prob.argmax(0) == 3)
    # tumor's share rises exactly where the epithelium probability beats 1/2
    share, share0 = out[0] / out[:3].sum(0), prob[0] / prob[:3].sum(0)
    assert np.array_equal(share > share0, p > 0.5)


@pytest.fixture(scope="module")
def default_seg():
    from wsss_napari.models.checkpoint import default_seg_model_path

    if not default_seg_model_path().is_file():
        pytest.skip("the default segmentation model is not installed")
    return load_model(default_seg_model_path())


@needs_prior
def test_the_default_models_masks_follow_the_epithelium(default_seg, wsss4luad_val):
    from wsss_napari.epithelium import load_epithelium_prior
    from wsss_napari.inference.predict import predict_mask

    rgb = load_rgb(wsss4luad_val / "img" / "04.png")
    off = predict_mask(default_seg, rgb, CamParams(device="cpu", epithelium=0.0))
    on = predict_mask(default_seg, rgb, CamParams(device="cpu"))  # the default: 1.0
    p = load_epithelium_prior().probability(rgb, default_seg.config.mpp)
    to_tumor, from_tumor = (on == TUMOR) & (off != TUMOR), (off == TUMOR) & (on != TUMOR)
    assert to_tumor.sum() + from_tumor.sum() > 0.01 * on.size  # the prior did something
    assert np.array_equal(on == BACKGROUND, off == BACKGROUND)  # never tissue vs glass
    if to_tumor.any():
        assert p[to_tumor].mean() > 0.5
    if from_tumor.any():
        assert p[from_tumor].mean() < 0.5


@needs_prior
def test_slide_maps_with_the_prior_are_seamless_on_real_tissue(default_seg, mixed_image):
    from wsss_napari.inference.slide_seg import map_geometry, slide_seg
    from wsss_napari.io.slide import Slide

    rgb, _ = mixed_image
    slide = Slide.from_arrays(np.ascontiguousarray(rgb), mpp=default_seg.config.mpp)
    cpu = CamParams(device="cpu", out_stride=1)
    geo, shape = map_geometry(slide, default_seg, cpu)
    whole = run_to_end(slide_seg(slide, default_seg, geo, shape, cpu.replace(tile_size=4096)))
    tiled = run_to_end(slide_seg(slide, default_seg, geo, shape, cpu.replace(tile_size=128)))
    plain = run_to_end(slide_seg(slide, default_seg, geo, shape, cpu.replace(epithelium=0.0)))
    # one stain reference for the region, so 128 px tiles give the one-piece map ...
    assert np.mean(whole == tiled) > 0.995
    # ... and the prior is really in it
    assert np.mean(whole != plain) > 0.01


@needs_prior
def test_the_regional_vote_gives_a_vessel_wall_inside_normal_lung_to_normal(default_seg,
                                                                            wsss4luad_val):
    from wsss_napari.inference.predict import predict_mask

    name = "08.png"  # normal lung around a vessel whose wall looks like stroma, pixel by pixel
    rgb, gt = load_rgb(wsss4luad_val / "img" / name), load_mask(wsss4luad_val / "mask" / name)
    normal = gt == NORMAL
    right = {}
    for ctx in (0.0, 128.0):
        p = predict_mask(default_seg, rgb, CamParams(device="cpu", context_um=ctx),
                         background=gt == BACKGROUND)
        right[ctx] = float((p[normal] == NORMAL).mean())
    # measured with the shipped model (which saw this image): 0.93 pixel by pixel, 1.00 voted
    assert right[128.0] > 0.98 and right[128.0] > right[0.0] + 0.03
