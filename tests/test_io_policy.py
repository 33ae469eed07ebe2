"""One way to read images and masks, one registry of export formats, no io <-> corrections cycle.

Each reader is checked on real files against pixel values known from how the file was made.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

import wsss_napari
from wsss_napari import WsssError
from wsss_napari.classes import PALETTE

PKG = Path(wsss_napari.__file__).parent


def _rgba_patch(path: Path) -> tuple[Path, np.ndarray]:
    """A 16 x 16 RGBA PNG: left half opaque dark pink, right half transparent black."""
    arr = np.zeros((16, 16, 4), np.uint8)
    arr[:, :8] = (120, 40, 90, 255)
    arr[:, 8:] = (0, 0, 0, 0)
    arr[0, 0] = (100, 0, 200, 128)  # half transparent
    Image.fromarray(arr, mode="RGBA").save(path)
    return path, arr


def test_every_image_reader_composites_alpha_onto_white(tmp_path):
    from wsss_napari.cli._predict import read_rgb as predict_read
    from wsss_napari.io.slide import Slide
    from wsss_napari.train.data import load_rgb

    path, _ = _rgba_patch(tmp_path / "p-[1, 0, 0].png")
    with Slide.open(path) as slide:
        as_slide = slide.read_region(0, 0, 0, 16, 16)
    for got in (load_rgb(path), predict_read(path), as_slide):
        assert got.dtype == np.uint8 and got.shape == (16, 16, 3)
        assert (got[1:, :8] == (120, 40, 90)).all()  # opaque tissue kept
        assert (got[:, 8:] == 255).all()  # transparent = glass, not black
        # 128/255 of (100, 0, 200) over white: 100*.502 + 255*.498 = 177, 127, 227
        assert np.abs(got[0, 0].astype(int) - (177, 127, 227)).max() <= 1


def test_grey_plus_alpha_image_is_refused_by_the_training_scan_and_loader(tmp_path):
    from wsss_napari.train.data import load_rgb, scan_patches

    path = tmp_path / "la-[1, 0, 0].png"
    Image.fromarray(np.zeros((16, 16, 2), np.uint8), mode="LA").save(path)
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "ok-[1, 0, 0].png")
    report = scan_patches(tmp_path)
    bad = [p for p in report.problems if p.path is not None]  # (+ data-set level remarks)
    assert [p.path.name for p in bad] == ["la-[1, 0, 0].png"]
    assert "unsupported image mode 'LA'" in bad[0].reason
    with pytest.raises(WsssError, match="2 channels"):
        load_rgb(path)


def _rgb_mask(labels: np.ndarray) -> np.ndarray:
    return np.asarray(PALETTE, np.uint8)[labels]


@pytest.fixture
def masks(tmp_path):
    """The same labels as a palette PNG, a grey PNG and an RGB PNG in the palette's colours."""
    labels = np.zeros((16, 16), np.uint8)
    labels[4:, :] = 1
    labels[8:, 8:] = 2
    labels[12:, :4] = 3
    d = tmp_path / "masks"
    d.mkdir()
    pal = Image.fromarray(labels, mode="P")
    pal.putpalette([7] * 768)  # the colours of a palette PNG do not matter, its values do
    pal.save(d / "pal.png")
    Image.fromarray(labels, mode="L").save(d / "grey.png")
    Image.fromarray(_rgb_mask(labels)).save(d / "rgb.png")
    Image.fromarray(np.dstack([_rgb_mask(labels), np.full((16, 16), 9, np.uint8)])).save(
        d / "rgba.png")
    return labels, d


def test_every_mask_reader_accepts_the_same_masks(masks):
    from wsss_napari.cli._predict import read_labels
    from wsss_napari.corrections.sources import open_mask_source
    from wsss_napari.train.data import load_mask

    labels, d = masks
    for name in ("pal.png", "grey.png", "rgb.png", "rgba.png"):
        for read in (load_mask, read_labels, lambda p: open_mask_source(p)[0]):
            np.testing.assert_array_equal(read(d / name), labels, err_msg=name)


def test_training_accepts_rgb_masks_now(tmp_path, masks):
    from wsss_napari.train.data import PatchDataset, scan_patches

    labels, d = masks
    Image.fromarray(np.full((16, 16, 3), 200, np.uint8)).save(tmp_path / "rgb.png")
    (tmp_path / "rgb-[1, 1, 1].png").write_bytes((tmp_path / "rgb.png").read_bytes())
    (tmp_path / "rgb.png").unlink()
    (d / "rgb-[1, 1, 1].png").write_bytes((d / "rgb.png").read_bytes())
    report = scan_patches(tmp_path, mask_dir=d, require_masks=True)
    assert not report.problems and len(report.items) == 1
    _, mask, _ = PatchDataset(report.items, with_masks=True).load(0)
    np.testing.assert_array_equal(mask, labels)


@pytest.mark.parametrize(("make", "message"), [
    (lambda p: Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3),
                                                                 dtype=np.uint8)).save(p),
     "outside the WSSS4LUAD palette"),
    (lambda p: Image.fromarray(np.full((16, 16), 7, np.uint8), mode="L").save(p),
     "holds label 7: mask values must be 0..3"),
    (lambda p: Image.fromarray(np.zeros((16, 16, 2), np.uint8), mode="LA").save(p),
     "has 2 channels"),
], ids=["rgb-photo", "value-7", "grey-alpha"])
def test_every_mask_reader_refuses_the_same_bad_masks(tmp_path, make, message):
    from wsss_napari.cli._predict import read_labels
    from wsss_napari.corrections.sources import open_mask_source
    from wsss_napari.train.data import load_mask

    path = tmp_path / "m.png"
    make(path)
    for read in (load_mask, read_labels, open_mask_source):
        with pytest.raises(WsssError, match=message):
            read(path)


def test_generated_patch_masks_are_palette_pngs_with_their_geometry(tmp_path):
    from wsss_napari.io.masks import read_mask, read_png_meta
    from wsss_napari.region import MaskGeometry
    from wsss_napari.sample.synth import make_patches, write_patch_dataset

    write_patch_dataset(tmp_path, 2, size=32, seed=3)
    expected = make_patches(2, size=32, seed=3)
    files = sorted((tmp_path / "masks").glob("*.png"), key=lambda p: int(p.stem.split("-")[1]))
    for f, (_, mask, _) in zip(files, expected, strict=True):
        with Image.open(f) as im:
            assert im.mode == "P"
        np.testing.assert_array_equal(read_mask(f), mask)
        assert read_png_meta(f)["geometry"] == MaskGeometry(slide=f.name)


def test_io_never_imports_corrections():
    offenders = []
    for path in (PKG / "io").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                mod = ("." * node.level) + (node.module or "")
                if "corrections" in mod:
                    offenders.append(f"{path.relative_to(PKG)}:{node.lineno} {mod}")
    assert not offenders


def test_export_registry_drives_cli_widget_and_manifest():
    import argparse

    from wsss_napari.cli import _export
    from wsss_napari.io.formats import FORMATS, all_suffixes, format_for_path
    from wsss_napari.params import ExportFormat

    assert set(FORMATS) == set(ExportFormat)
    for fmt, spec in FORMATS.items():
        assert format_for_path(f"out{spec.suffix}") is fmt
    manifest = yaml.safe_load((PKG / "napari.yaml").read_text())
    (writer,) = [w for w in manifest["contributions"]["writers"]
                 if w["command"] == "wsss-napari.write_labels"]
    assert sorted(writer["filename_extensions"]) == sorted(all_suffixes())
    parser = argparse.ArgumentParser()
    _export.register(parser.add_subparsers())
    sub = parser._subparsers._group_actions[0].choices["export"]
    (fmt_action,) = [a for a in sub._actions if a.dest == "export__format"]
    assert list(fmt_action.choices) == [f.value for f in FORMATS]
