"""Stain normalisation: Reinhard / Macenko undo a known HED shift, one estimate per slide
(tiles do not seam), degenerate input, the checkpoint record, and training + inference."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wsss_napari import WsssError, WsssWarning
from wsss_napari.io.slide import Slide
from wsss_napari.region import Region
from wsss_napari.stain import (
    Normalizer,
    StainError,
    StainEstimate,
    estimate,
    load_reference,
    normalize_slide,
    slide_for_model,
)


def _hed_shift(rgb: np.ndarray, h: float, e: float) -> np.ndarray:
    """Scale the haematoxylin and eosin concentrations (skimage colour deconvolution)."""
    from skimage.color import hed2rgb, rgb2hed

    hed = rgb2hed(rgb)
    hed[..., 0] *= h
    hed[..., 1] *= e
    return np.clip(hed2rgb(hed) * 255 + 0.5, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def he_image(shared_data) -> np.ndarray:
    """A real H&E image of the WSSS4LUAD validation set (skips without ../shared)."""
    path = shared_data / "wsss4luad" / "validation" / "img" / "00.png"
    if not path.is_file():
        pytest.skip(f"no {path}")
    return np.asarray(Image.open(path).convert("RGB"))


H_REF, E_REF = np.array([0.65, 0.70, 0.29]), np.array([0.07, 0.99, 0.11])
H_LAB2, E_LAB2 = np.array([0.55, 0.76, 0.35]), np.array([0.16, 0.90, 0.40])


def _beer_lambert(h_vec, e_vec, h_scale=1.0, e_scale=1.0, seed=0, shape=(256, 320)):
    """Generated H&E by the Beer-Lambert law: smooth haematoxylin 'nuclei' and eosin fields
    (with glass where there is no eosin) mixed through the given stain vectors."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    field = [gaussian_filter(rng.random(shape), s) for s in (3, 8)]
    field = [(f - f.min()) / (f.max() - f.min()) for f in field]
    ch = np.clip((field[0] - 0.55) * 8, 0, 1.6)
    ce = np.clip((field[1] - 0.3) * 2.5, 0, 1.2)
    ch[ce == 0] = 0
    h_vec, e_vec = h_vec / np.linalg.norm(h_vec), e_vec / np.linalg.norm(e_vec)
    od = ch[..., None] * h_scale * h_vec + ce[..., None] * e_scale * e_vec
    return np.clip(256 * np.exp(-od) - 1 + 0.5, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def synth_image() -> np.ndarray:
    return _beer_lambert(H_REF, E_REF)


def test_generated_other_lab_stain_is_mapped_onto_the_reference():
    ref = _beer_lambert(H_REF, E_REF)
    other = _beer_lambert(H_LAB2, E_LAB2, 1.4, 0.7)  # same tissue, another lab's stain
    before = np.abs(other.astype(float) - ref).mean()
    est = estimate(other)
    h, e = (np.asarray(v) for v in est.stains)
    assert h @ (H_LAB2 / np.linalg.norm(H_LAB2)) > 0.99  # the stain vectors are found
    assert e @ (E_LAB2 / np.linalg.norm(E_LAB2)) > 0.99
    mac = Normalizer("macenko", estimate(ref), est)(other)
    rei = Normalizer("reinhard", estimate(ref), est)(other)
    assert np.abs(mac.astype(float) - ref).mean() < 0.35 * before  # measured 0.26
    # Reinhard only matches colour statistics (a hue change of the stains is beyond it)
    lab_ref = np.asarray(estimate(ref).lab_mean)
    gap_before = np.linalg.norm(np.asarray(estimate(other).lab_mean) - lab_ref)
    gap_after = np.linalg.norm(np.asarray(estimate(rei).lab_mean) - lab_ref)
    assert gap_after < 0.6 * gap_before, (gap_before, gap_after)


@pytest.mark.parametrize(("method", "gain"), [("reinhard", 0.85), ("macenko", 0.5)])
def test_normalising_real_he_undoes_a_known_hed_shift(method, gain, he_image):
    shifted = _hed_shift(he_image, 1.6, 0.6)
    out = Normalizer(method, estimate(he_image), estimate(shifted))(shifted)
    before = np.abs(shifted.astype(float) - he_image).mean()
    after = np.abs(out.astype(float) - he_image).mean()
    assert out.shape == he_image.shape and out.dtype == np.uint8
    assert after < gain * before, (before, after)


def test_real_he_stain_vectors_are_haematoxylin_then_eosin(he_image):
    est = estimate(he_image)
    h, e = np.asarray(est.stains)
    assert h[0] > e[0] and e[1] > h[2]  # H absorbs red more than E; E absorbs green most
    assert np.all(np.asarray(est.stains) > -0.05) and min(est.max_conc) > 0.1
    assert StainEstimate.from_dict(est.to_dict()) == est


def test_one_estimate_per_slide_so_tiles_do_not_seam(synth_image):
    shifted = _beer_lambert(H_LAB2, E_LAB2, 1.4, 0.7)
    slide = Slide.from_arrays([shifted], mpp=0.5, name="shifted")
    target = estimate(synth_image)
    wrapped = normalize_slide(slide, "macenko", target)
    whole = wrapped.read_region(0, 0, 0, 256, 320)
    tiles = np.zeros_like(whole)
    for y in range(0, 256, 64):
        for x in range(0, 320, 80):
            tiles[y:y + 64, x:x + 80] = wrapped.read_region(0, y, x, 64, 80)
    np.testing.assert_array_equal(tiles, whole)  # tile by tile == in one piece
    # what per-tile estimates would do: another transform in every tile
    per_tile = np.zeros_like(whole)
    for y in range(0, 256, 128):
        for x in range(0, 320, 160):
            t = shifted[y:y + 128, x:x + 160]
            per_tile[y:y + 128, x:x + 160] = Normalizer("macenko", target, estimate(t))(t)
    assert np.abs(per_tile.astype(int) - whole).max() > 3
    assert wrapped.shape == slide.shape and wrapped.mpp == 0.5  # the rest is the slide's


def test_blank_and_degenerate_input():
    white = np.full((64, 64, 3), 245, np.uint8)
    with pytest.raises(StainError, match="too little stained tissue"):
        estimate(white)
    pink = np.zeros((64, 64, 3), np.uint8) + np.array([200, 90, 160], np.uint8)
    pink[::2] = [190, 80, 150]  # one stain only, two shades
    with pytest.raises(StainError):
        estimate(pink)
    bad = {"lab_mean": [50, 0, 0], "lab_std": [10, 5, 5], "stains": [[0.6, 0.7, 0.3],
           [float("nan"), 0.8, 0.5]], "max_conc": [2, 1]}
    with pytest.raises(WsssError, match="not finite"):
        StainEstimate.from_dict(bad)


def test_glass_slide_falls_back_to_the_reference_with_a_warning(synth_image):
    target = estimate(synth_image)
    glass = Slide.from_arrays([np.full((128, 128, 3), 240, np.uint8)], name="glass")
    with pytest.warns(WsssWarning, match="falls back to the reference"):
        wrapped = normalize_slide(glass, "reinhard", target)
    assert wrapped.normalizer.fallback
    out = wrapped.read_region(0, 0, 0, 32, 32)
    assert np.abs(out.astype(int) - 240).max() <= 1  # identity transform


def test_reference_region_on_glass_is_refused(tmp_path, synth_image):
    img = np.full((256, 640, 3), 243, np.uint8)
    img[:, 320:] = synth_image
    path = tmp_path / "ref.png"
    Image.fromarray(img).save(path)
    with pytest.raises(StainError, match="reference region .* too little stained tissue"):
        load_reference(path, Region(y=0, x=0, height=200, width=300))
    ok = load_reference(path, Region(y=0, x=320, height=256, width=320))
    assert ok.n_pixels > 500 and "reference region" in ok.source


def test_training_stores_the_target_and_inference_matches(tmp_path):
    from wsss_napari.cli import main
    from wsss_napari.models.checkpoint import load_model
    from wsss_napari.sample.synth import write_patch_dataset

    patches = write_patch_dataset(tmp_path / "p", 8, size=64, seed=2)
    out = tmp_path / "cam.safetensors"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", WsssWarning)
        assert main(["train-cls", str(patches), "--out", str(out), "--backbone", "test_resnet",
                     "--no-pretrained", "--epochs", "1", "--batch-size", "4", "--crop-size", "32",
                     "--val-fraction", "0", "--stain-norm", "macenko", "--device", "cpu"]) == 0
    model = load_model(out)
    record = model.config.extra["stain"]
    assert record["method"] == "macenko" and record["target"]["source"] == "training patches"
    target = StainEstimate.from_dict(record["target"])

    rgb = _beer_lambert(H_LAB2, E_LAB2, seed=3, shape=(128, 128))
    slide = Slide.from_arrays([rgb], mpp=0.5, name="s")
    wrapped = slide_for_model(slide, model)
    assert wrapped.normalizer.target == target and wrapped.normalizer.method == "macenko"
    slide_path = tmp_path / "s.png"
    Image.fromarray(rgb).save(slide_path)
    assert main(["cam", str(slide_path), "--model", str(out), "--out",
                 str(tmp_path / "c.zarr"), "--scales", "1", "--crop-size", "64",
                 "--tile-size", "128", "--halo", "0", "--device", "cpu"]) == 0
    assert slide_for_model(slide, load_model(Path(str(out)))) is not slide
    with pytest.raises(WsssError, match="stain_norm must be one of"):
        main_params = {"stain_norm": "vahadane"}
        from wsss_napari.params import TrainClsParams

        TrainClsParams(**main_params)
