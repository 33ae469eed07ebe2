"""A slide without MPP: level 0 read at the model's mpp with a one-line warning naming
``--slide-mpp``; the override (``Slide.set_mpp``, ``slide`` / ``cam --slide-mpp``) picks the
level the model's resolution needs, checked against the file's own level-1 pixels."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from wsss_napari.cli import main
from wsss_napari.inference.slide_cam import slide_cams
from wsss_napari.io.slide import Slide, SlideError
from wsss_napari.models.config import ModelConfig
from wsss_napari.models.registry import build_model
from wsss_napari.params import CamParams
from wsss_napari.progress import run_to_end

PARAMS = CamParams(device="cpu", scales=(1.0,), tile_size=128, halo=16, batch_size=32,
                   skip_glass=False)
FLAGS = ["--device", "cpu", "--scales", "1", "--tile-size", "128", "--halo", "16",
         "--mask-from", "cam"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A 2-level pyramidal TIFF with no resolution tags (like the TCGA slide) and a tiny
    CAM model at 1.0 um/px."""
    import tifffile

    from wsss_napari.models.checkpoint import save_model
    from wsss_napari.sample.synth import make_tissue

    d = tmp_path_factory.mktemp("nompp")
    rgb, _ = make_tissue(512, 768, seed=4)
    half = rgb.reshape(256, 2, 384, 2, 3).mean(axis=(1, 3)).round().astype(np.uint8)
    path = d / "nompp.tif"
    with tifffile.TiffWriter(path) as tw:
        tw.write(rgb, tile=(128, 128), subifds=1, photometric="rgb")
        tw.write(half, tile=(128, 128), subfiletype=1, photometric="rgb")
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="test_resnet", input_size=64, mpp=1.0)).eval()
    ckpt = d / "tiny.safetensors"
    save_model(model, ckpt, half=False)
    return {"slide": path, "half": half, "model": model, "ckpt": str(ckpt)}


def test_override_reads_the_level_the_model_needs(files, tmp_path):
    with Slide.open(files["slide"]) as s:
        assert s.mpp is None and s.mpp_source == "unknown" and len(s.levels) == 2
        plain = run_to_end(slide_cams(s, files["model"], PARAMS, cache_dir=tmp_path))
        assert plain.level == 0 and plain.downsample == PARAMS.out_stride
        assert len(plain.warnings) == 1 and "--slide-mpp" in plain.warnings[0]
        s.set_mpp(0.5)
        assert (s.mpp, s.mpp_source) == (0.5, "user")
        over = run_to_end(slide_cams(s, files["model"], PARAMS, cache_dir=tmp_path))
    assert over.level == 1 and over.downsample == 2 * PARAMS.out_stride
    assert over.warnings == () or list(over.warnings) == []
    assert over.raw.shape[1:] == (256 // PARAMS.out_stride, 384 // PARAMS.out_stride)
    assert over.geometry.mpp == 0.5
    # the model saw the file's level-1 pixels: the same CAMs as that array at 1.0 um/px
    ref = run_to_end(slide_cams(Slide.from_arrays([files["half"]], mpp=1.0), files["model"],
                                PARAMS, cache_dir=tmp_path / "ref"))
    np.testing.assert_allclose(np.asarray(over.raw), np.asarray(ref.raw), atol=1e-4)


def test_set_mpp_refuses_nonsense(files):
    with Slide.open(files["slide"]) as s, pytest.raises(SlideError, match="0.25 = 40x"):
        s.set_mpp(0.0)
    with pytest.raises(SlideError, match="0.25 = 40x"):
        Slide.open(files["slide"], mpp=100.0)
    with Slide.open(files["slide"], mpp=0.25) as s:
        assert (s.mpp, s.mpp_source) == (0.25, "user")


def test_cli_slide_warns_and_overrides(files, tmp_path, capsys, monkeypatch):
    from wsss_napari.io.export import read_exported_mask

    monkeypatch.setenv("WSSS_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "out"
    out.mkdir()
    args = [str(files["slide"]), "--out", str(out), "--model", files["ckpt"], *FLAGS]
    assert main(["slide", *args]) == 0
    text = capsys.readouterr().out
    warns = [ln for ln in text.splitlines() if ln.startswith("warning:")]
    assert len(warns) == 1 and "--slide-mpp UM" in warns[0]
    assert "slide has no mpp" in text
    plain, _ = read_exported_mask(out / "nompp.mask.ome.tif")

    assert main(["slide", *args, "--slide-mpp", "0.5"]) == 0  # not skipped: other params
    text = capsys.readouterr().out
    assert "warning:" not in text and "mm²" in text and text.startswith("done:")
    over, _ = read_exported_mask(out / "nompp.mask.ome.tif")
    assert over.shape == (plain.shape[0] // 2, plain.shape[1] // 2)
    done = json.loads((out / "nompp.done.json").read_text())
    assert done["record"]["slide_mpp"] == 0.5

    assert main(["cam", str(files["slide"]), "--model", files["ckpt"], "--out",
                 str(tmp_path / "c.zarr"), "--slide-mpp", "0.5", *FLAGS[:-2]]) == 0
    os_ = CamParams().out_stride  # level 1 (2 level-0 px per model px) x the output stride
    assert f"shape (3, {256 // os_}, {384 // os_})  downsample {2 * os_} " in \
        capsys.readouterr().out

    with pytest.raises(SystemExit) as exc:  # argparse: usage and one error line
        main(["slide", *args, "--slide-mpp", "0"])
    assert exc.value.code == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if "error:" in ln]
    assert len(err) == 1 and "--slide-mpp" in err[0] and "0.25 = 40x" in err[0]


def test_cam_widget_slide_mpp_field(files, make_napari_viewer, qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("WSSS_CACHE_DIR", str(tmp_path / "cache"))
    viewer = make_napari_viewer(show=False)
    viewer.open(str(files["slide"]), plugin="wsss-napari")
    _, cam = viewer.window.add_plugin_dock_widget("wsss-napari", "CAM")
    cam.model_source = files["ckpt"]
    cam.region_mode = "Whole slide"
    cam.params = PARAMS
    assert cam.mpp_spin.value() == 0 and cam.mpp_spin.text() == "from file"
    cam.mpp_spin.setValue(0.5)
    with qtbot.waitSignal(cam.run().finished, timeout=60_000):
        pass
    res = cam.last_result
    assert res.level == 1 and res.downsample == 2 * PARAMS.out_stride and not res.warnings
    assert res.geometry.mpp == 0.5
    slide = viewer.layers[0].metadata["slide"]  # the layer's slide itself is left as it was
    assert slide.mpp is None and slide.mpp_source == "unknown"
