"""Bad input, one case per kind: every one is a single clear line, a non-zero exit code where it
is an error, and nothing half-written. The cases and their messages are listed in
docs/bad-input.md. The CLI runs in-process (``wsss_napari.cli.main``) on real broken files
generated here; one napari case uses a real viewer.

Region/geometry cases of ``export`` (a map without geometry, ``--origin``) belong to the
region work and are tested there.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wsss_napari.cli import main

# ========== helpers

def cli(capsys, *argv) -> tuple[int, str, str]:
    """Run the CLI in-process: ``(exit code, stdout, stderr)``."""
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def one_line_error(rc: int, err: str, *needles: str) -> str:
    """The CLI failed with exactly one line on stderr that says ``needles``."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, (rc, err)
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith("wsss-napari ") and ": error: " in line, line
    assert "Traceback" not in err and "tifffile" not in err.lower().replace(".tif", "")
    for n in needles:
        assert n in line, (n, line)
    return line


def nothing_left(folder: Path, *names: str) -> None:
    """None of ``names`` exists in ``folder`` and no temporary ``.part`` file is left."""
    for n in names:
        assert not (folder / n).exists(), n
    assert not list(folder.glob("*.part*")) and not list(folder.glob(".*.part*"))


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` RGB pixels (and holds almost nothing)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    import torch

    from wsss_napari.models.checkpoint import save_model
    from wsss_napari.models.config import ModelConfig
    from wsss_napari.models.registry import build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="test_resnet", input_size=64, mpp=1.0))
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_model(model.eval(), path)
    return path


@pytest.fixture(scope="module")
def slide_tif(tmp_path_factory) -> Path:
    from wsss_napari.sample.synth import write_pyramidal_tiff

    path = tmp_path_factory.mktemp("slide") / "slide.tif"
    return write_pyramidal_tiff(path, 512, 512, seed=1, tile=256, mpp=0.5)


@pytest.fixture
def images(tmp_path) -> Path:
    """Two good 64 px patches."""
    d = tmp_path / "imgs"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), np.uint8)).save(d / f"ok{i}.png")
    return d


@pytest.fixture
def label_mask(tmp_path) -> Path:
    m = np.zeros((32, 32), np.uint8)
    m[:, 16:] = 1
    m[:4] = 3
    p = tmp_path / "mask.png"
    Image.fromarray(m).save(p)
    return p


# ========== slides

def test_truncated_svs_says_truncated_or_damaged(capsys, tmp_path, shared_slides):
    src = shared_slides / "CMU-1-Small-Region.svs"
    data = src.read_bytes()
    for frac in (0.5, 0.95):  # header cut off / last pages missing
        p = tmp_path / f"cut{frac}.svs"
        p.write_bytes(data[: int(len(data) * frac)])
        rc, _, err = cli(capsys, "info", p)
        line = one_line_error(rc, err, "truncated or damaged", p.name)
        assert "holds no 2D image series" not in line


def test_truncated_generated_tiff(capsys, tmp_path, slide_tif):
    data = slide_tif.read_bytes()
    for n in (len(data) // 2, 200):
        p = tmp_path / f"cut{n}.tif"
        p.write_bytes(data[:n])
        rc, _, err = cli(capsys, "info", p)
        one_line_error(rc, err, "truncated", p.name)


@pytest.mark.parametrize(("name", "content", "needle"), [
    ("zero.svs", b"", "is empty (0 bytes)"),
    ("text.tif", b"hello, not a TIFF", "is not a TIFF/SVS file"),
    ("garbage.png", b"\x00\x01 not an image at all", "is not a readable PNG/JPEG image"),
], ids=["zero-byte", "non-tiff-named-tif", "non-image-named-png"])
def test_not_a_slide(capsys, tmp_path, name, content, needle):
    p = tmp_path / name
    p.write_bytes(content)
    rc, _, err = cli(capsys, "info", p)
    one_line_error(rc, err, needle)


def test_missing_slide_and_folder(capsys, tmp_path):
    rc, _, err = cli(capsys, "info", tmp_path / "nope.svs")
    one_line_error(rc, err, "does not exist")
    rc, _, err = cli(capsys, "info", tmp_path)
    one_line_error(rc, err, "is a folder, not a slide file")


def test_truncated_png_slide(capsys, tmp_path):
    rng = np.random.default_rng(1)
    full = tmp_path / "full.png"
    Image.fromarray(rng.integers(0, 255, (128, 128, 3), np.uint8)).save(full)
    p = tmp_path / "cut.png"
    p.write_bytes(full.read_bytes()[:3000])
    rc, _, err = cli(capsys, "info", p)
    one_line_error(rc, err, "damaged or truncated")


def test_two_channel_png_is_refused_as_documented(capsys, tmp_path):
    p = tmp_path / "la.png"
    Image.fromarray(np.zeros((16, 16, 2), np.uint8), mode="LA").save(p)
    rc, _, err = cli(capsys, "info", p)
    one_line_error(rc, err, "has 2 channels")


@pytest.mark.parametrize(("array", "needle"), [
    (np.zeros((32, 32, 5), np.uint8), "has 5 channels"),
    (np.zeros((32, 32), np.complex64), "pixel type complex64"),
    (np.linspace(-5, 1000, 32 * 32, dtype=np.float32).reshape(32, 32), "float image"),
    (np.zeros((6, 32, 32), np.uint8), "is a stack"),
], ids=["5-channels", "complex", "float-out-of-range", "z-stack"])
def test_wrong_dtype_or_layout(capsys, tmp_path, array, needle):
    import tifffile

    p = tmp_path / "odd.tif"
    kw = {"photometric": "minisblack"} if array.ndim == 3 else {}
    if array.ndim == 3 and array.shape[-1] == 5:
        kw["planarconfig"] = "contig"
    tifffile.imwrite(p, array, **kw)
    rc, _, err = cli(capsys, "info", p)
    one_line_error(rc, err, needle)


def test_absurd_png_size(capsys, tmp_path):
    p = tmp_path / "huge.png"
    p.write_bytes(png_header(100_000, 100_000))
    rc, _, err = cli(capsys, "info", p)
    one_line_error(rc, err, "too large", "10,000,000,000")


def test_truncated_slide_opened_in_napari_is_one_notification(tmp_path, slide_tif):
    from napari.components import ViewerModel
    from napari.utils.notifications import notification_manager
    from npe2 import PluginManager

    pm = PluginManager.instance()  # a Viewer discovers plugins; a ViewerModel does not
    if "wsss-napari" not in pm._manifests:
        pm.discover()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(slide_tif.read_bytes()[: slide_tif.stat().st_size // 2])
    viewer = ViewerModel()
    seen = len(notification_manager.records)
    viewer.open(str(cut), plugin="wsss-napari")
    messages = [str(n.message) for n in notification_manager.records[seen:]]
    assert len(messages) == 1 and "cut.tif" in messages[0] and "truncated" in messages[0]
    assert "\n" not in messages[0] and len(viewer.layers) == 0


# ========== masks given to export

def test_rgb_photo_given_as_a_mask(capsys, tmp_path):
    p = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 255, (32, 32, 3), np.uint8)).save(p)
    rc, _, err = cli(capsys, "export", p, "--out", tmp_path / "m.geojson")
    one_line_error(rc, err, "not a label mask", "palette")
    nothing_left(tmp_path, "m.geojson", "m.geojson.run.json")


def test_mask_holding_200(capsys, tmp_path, label_mask):
    m = np.asarray(Image.open(label_mask)).copy()
    m[0, 0] = 200
    p = tmp_path / "m200.png"
    Image.fromarray(m).save(p)
    rc, _, err = cli(capsys, "export", p, "--out", tmp_path / "m.geojson")
    one_line_error(rc, err, "holds label 200")
    nothing_left(tmp_path, "m.geojson")


def test_two_channel_png_mask(capsys, tmp_path):
    p = tmp_path / "la.png"
    Image.fromarray(np.zeros((16, 16, 2), np.uint8), mode="LA").save(p)
    rc, _, err = cli(capsys, "export", p, "--out", tmp_path / "m.png")
    one_line_error(rc, err, "has 2 channels")
    nothing_left(tmp_path, "m.png")


def test_tiff_mask_with_labels_outside_the_classes(capsys, tmp_path):
    import tifffile

    p = tmp_path / "m9.tif"
    tifffile.imwrite(p, np.full((16, 16), 9, np.uint8))
    rc, _, err = cli(capsys, "export", p, "--out", tmp_path / "m.csv")
    one_line_error(rc, err, "holds label 9")
    nothing_left(tmp_path, "m.csv")


def test_missing_mask_and_folder_that_is_no_zarr(capsys, tmp_path, images):
    rc, _, err = cli(capsys, "export", tmp_path / "nope.png", "--out", tmp_path / "m.png")
    one_line_error(rc, err, "mask not found")
    rc, _, err = cli(capsys, "export", images, "--out", tmp_path / "m.png")
    one_line_error(rc, err, "not a zarr mask or edit store")
    nothing_left(tmp_path, "m.png")


def test_edit_store_of_the_old_format(capsys, tmp_path):
    from wsss_napari.corrections.store import EditStore

    store = EditStore.open_or_create(tmp_path / "edits.zarr", "case", (64, 64), 4.0, tile=32)
    store.write(0, 0, np.zeros((8, 8), np.uint8))
    store._group.attrs["format_version"] = 1  # as the eraser-saves-tumor version wrote it
    rc, _, err = cli(capsys, "export", tmp_path / "edits.zarr", "--out", tmp_path / "m.png")
    one_line_error(rc, err, "has format 1", "eraser", "upgrade_store")
    nothing_left(tmp_path, "m.png")


def test_export_format_unknown(capsys, tmp_path, label_mask):
    rc, _, err = cli(capsys, "export", label_mask, "--out", tmp_path / "m.xyz")
    one_line_error(rc, err, "cannot tell the export format")
    nothing_left(tmp_path, "m.xyz")


def test_export_into_a_folder_that_cannot_exist(capsys, tmp_path, label_mask):
    rc, _, err = cli(capsys, "export", label_mask, "--out", "/proc/x/out.geojson",
                     "--assume-level0")
    one_line_error(rc, err, "/proc/x")


def test_export_with_an_unreadable_run_record(capsys, tmp_path, label_mask):
    bad = tmp_path / "rec.json"
    bad.write_text("{ not json")
    rc, _, err = cli(capsys, "export", label_mask, "--out", tmp_path / "m.png", "--record", bad)
    one_line_error(rc, err, "cannot read the run record")
    nothing_left(tmp_path, "m.png")


# ========== eval

def _masks(folder: Path, names: dict[str, np.ndarray]) -> Path:
    folder.mkdir()
    for n, a in names.items():
        Image.fromarray(a).save(folder / n)
    return folder


def test_eval_warns_about_predictions_without_ground_truth(capsys, tmp_path):
    m = np.zeros((8, 8), np.uint8)
    m[:, 4:] = 1
    pred = _masks(tmp_path / "pred", {"a.png": m, "b.png": m, "extra1.png": m, "extra2.png": m})
    gt = _masks(tmp_path / "gt", {"a.png": m, "b.png": m})
    rc, out, err = cli(capsys, "eval", pred, gt)
    assert rc == 0 and "2 images" in out
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("warning: 2 prediction(s) have no ground")
    assert "extra1.png" in lines[0] and "extra2.png" in lines[0]


def test_eval_prediction_missing_or_of_another_size(capsys, tmp_path):
    m = np.zeros((8, 8), np.uint8)
    gt = _masks(tmp_path / "gt", {"a.png": m})
    pred = _masks(tmp_path / "pred", {"b.png": m})
    rc, _, err = cli(capsys, "eval", pred, gt)
    one_line_error(rc, err, "no prediction for 'a.png'")
    pred2 = _masks(tmp_path / "pred2", {"a.png": np.zeros((8, 9), np.uint8)})
    rc, _, err = cli(capsys, "eval", pred2, gt)
    one_line_error(rc, err, "'a.png': prediction is 9 x 8 px")


def test_eval_prediction_with_labels_outside_the_classes(capsys, tmp_path):
    m = np.zeros((8, 8), np.uint8)
    gt = _masks(tmp_path / "gt", {"a.png": m})
    pred = _masks(tmp_path / "pred", {"a.png": np.full((8, 8), 7, np.uint8)})
    rc, _, err = cli(capsys, "eval", pred, gt)
    one_line_error(rc, err, "a.png' holds label 7", "mask values must be 0..3")


def test_eval_missing_folders(capsys, tmp_path):
    rc, _, err = cli(capsys, "eval", tmp_path / "nopred", tmp_path)
    one_line_error(rc, err, "does not exist")
    (tmp_path / "p").mkdir()
    rc, _, err = cli(capsys, "eval", tmp_path / "p", tmp_path / "nogt")
    one_line_error(rc, err, "does not exist")


# ========== checkpoints

def _checkpoint_variants(tiny_model: Path, d: Path) -> dict[str, Path]:
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(tiny_model), "pt") as f:
        meta = f.metadata()
    weights = load_file(str(tiny_model))
    cfg = json.loads(meta["wsss_napari"])
    out = {}
    out["text"] = d / "text.safetensors"
    out["text"].write_text("these are not weights")
    out["pickle"] = d / "pickled.pt"
    torch.save({"w": torch.zeros(2)}, out["pickle"])
    out["truncated"] = d / "cut.safetensors"
    out["truncated"].write_bytes(tiny_model.read_bytes()[:300])
    out["plain"] = d / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(out["plain"]))
    out["architecture"] = d / "arch.safetensors"
    save_file(weights, str(out["architecture"]),
              metadata={**meta, "wsss_napari": json.dumps({**cfg, "backbone": "resnet18"})})
    out["missing"] = d / "nope.safetensors"
    return out


NEEDLES = {
    "text": "not a wsss-napari checkpoint",
    "pickle": "never opened",
    "truncated": "corrupt",
    "plain": "no model config",
    "architecture": "weights do not match",
    "missing": "not found",
}


@pytest.mark.parametrize("kind", list(NEEDLES))
def test_bad_checkpoint_predict_leaves_no_output_folder(capsys, tmp_path, tiny_model, images,
                                                       kind):
    model = _checkpoint_variants(tiny_model, tmp_path)[kind]
    rc, _, err = cli(capsys, "predict", model, images, "--out", tmp_path / "out")
    one_line_error(rc, err, NEEDLES[kind])
    assert not (tmp_path / "out").exists()


def test_bad_checkpoint_cam_writes_no_store(capsys, tmp_path, tiny_model, slide_tif):
    model = _checkpoint_variants(tiny_model, tmp_path)["pickle"]
    rc, _, err = cli(capsys, "cam", slide_tif, "--model", model, "--out", tmp_path / "c.zarr")
    one_line_error(rc, err, "pickle")
    nothing_left(tmp_path, "c.zarr", "c.zarr.run.json")


# ========== outputs and cam

def test_cam_into_a_folder_that_cannot_exist(capsys, tiny_model, slide_tif):
    rc, _, err = cli(capsys, "cam", slide_tif, "--model", tiny_model, "--out",
                     "/proc/x/out.zarr", "--scales", "1")
    one_line_error(rc, err, "/proc/x")


def test_cam_of_a_damaged_slide_writes_nothing(capsys, tmp_path, tiny_model, slide_tif):
    cut = tmp_path / "cut.tif"
    cut.write_bytes(slide_tif.read_bytes()[: slide_tif.stat().st_size // 2])
    rc, _, err = cli(capsys, "cam", cut, "--model", tiny_model, "--out", tmp_path / "c.zarr")
    one_line_error(rc, err, "truncated")
    nothing_left(tmp_path, "c.zarr", "c.zarr.run.json")


def test_cam_region_outside_the_slide(capsys, tmp_path, tiny_model, slide_tif):
    rc, _, err = cli(capsys, "cam", slide_tif, "--model", tiny_model, "--out",
                     tmp_path / "c.zarr", "--region", 5000, 5000, 10, 10)
    one_line_error(rc, err, "outside")
    nothing_left(tmp_path, "c.zarr", "c.zarr.run.json")


def test_cam_of_a_slide_without_mpp_warns_once(capsys, caplog, tmp_path, tiny_model):
    from wsss_napari.sample.synth import make_tissue

    p = tmp_path / "no-mpp.png"  # a PNG states no microns per pixel
    Image.fromarray(make_tissue(128, 128, seed=5)[0]).save(p)
    rc, out, err = cli(capsys, "cam", p, "--model", tiny_model, "--out", tmp_path / "c.zarr",
                       "--scales", "1")
    assert rc == 0
    said = [r for r in caplog.records if "microns-per-pixel is unknown" in r.getMessage()]
    assert len(said) == 1 and said[0].levelname == "WARNING"
    assert "microns-per-pixel" not in out  # not printed a second time


# ========== predict

def _add_bad_images(images: Path) -> None:
    (images / "garbage.png").write_bytes(b"not a png")
    good = (images / "ok0.png").read_bytes()
    (images / "cut.png").write_bytes(good[: len(good) // 2])


def test_predict_skips_bad_images_with_a_report(capsys, tmp_path, tiny_model, images):
    _add_bad_images(images)
    out = tmp_path / "out"
    rc, stdout, err = cli(capsys, "predict", tiny_model, images, "--out", out, "--scales", "1")
    assert rc == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["ok0.png", "ok1.png"]
    for name in ("garbage.png", "cut.png"):  # each reported once, on one line
        lines = [ln for ln in err.splitlines() if name in ln]
        assert len(lines) == 1 and lines[0].startswith(f"skipped: {name}: "), err
    report = (out / "predict.skipped.tsv").read_text().splitlines()
    assert sorted(r.split("\t")[0] for r in report) == ["cut.png", "garbage.png"]
    assert "2 masks written" in stdout and "2 image(s) skipped" in stdout


def test_predict_on_bad_stop_writes_nothing(capsys, tmp_path, tiny_model, images):
    _add_bad_images(images)
    out = tmp_path / "out"
    rc, _, err = cli(capsys, "predict", tiny_model, images, "--out", out, "--on-bad", "stop")
    assert rc == 2 and not out.exists()
    errors = [ln for ln in err.splitlines() if ": error: " in ln]
    assert len(errors) == 1 and "2 bad image(s)" in errors[0] and "nothing" in errors[0]
    assert sum("garbage.png" in ln for ln in err.splitlines()) == 1


def test_predict_with_only_bad_images(capsys, tmp_path, tiny_model):
    d = tmp_path / "imgs"
    d.mkdir()
    (d / "a.png").write_bytes(b"nope")
    rc, _, err = cli(capsys, "predict", tiny_model, d, "--out", tmp_path / "out")
    assert rc == 2 and not (tmp_path / "out").exists()
    assert [ln for ln in err.splitlines() if ": error: " in ln][0].count("none of the 1") == 1


def test_predict_image_without_its_background_mask(capsys, tmp_path, tiny_model, images):
    bg = tmp_path / "bg"
    bg.mkdir()
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(bg / "ok0.png")
    out = tmp_path / "out"
    rc, _, err = cli(capsys, "predict", tiny_model, images, "--out", out,
                     "--background-masks", bg, "--scales", "1")
    assert rc == 0 and (out / "ok0.png").exists() and not (out / "ok1.png").exists()
    assert "skipped: ok1.png: no background mask for 'ok1.png'" in err


def test_predict_empty_or_missing_image_folder(capsys, tmp_path, tiny_model):
    (tmp_path / "empty").mkdir()
    rc, _, err = cli(capsys, "predict", tiny_model, tmp_path / "empty", "--out", tmp_path / "o")
    one_line_error(rc, err, "no images")
    rc, _, err = cli(capsys, "predict", tiny_model, tmp_path / "nope", "--out", tmp_path / "o")
    one_line_error(rc, err, "does not exist")
    assert not (tmp_path / "o").exists()


def test_predict_into_a_folder_that_cannot_exist(capsys, tiny_model, images):
    rc, _, err = cli(capsys, "predict", tiny_model, images, "--out", "/proc/x/out")
    one_line_error(rc, err, "/proc/x")


# ========== parameters

@pytest.mark.parametrize(("text", "needle"), [
    ("postproc: [1, 2\n", "cannot parse parameter file"),
    ("postproc:\n  bg_exponent: -5\n", "bg_exponent=-5 is outside"),
    ("postproc:\n  bg_exponent: abc\n", "is not a number"),
    ("postproc:\n  bg_exponnent: 3\n", "bg_exponnent"),
    ("bg_exponnent: 3\n", "unknown parameter(s)"),
    ("- 1\n- 2\n", "must hold a mapping"),
], ids=["bad-yaml", "out-of-range", "not-a-number", "misspelt-key", "misspelt-flat",
        "not-a-mapping"])
def test_bad_parameter_file(capsys, tmp_path, tiny_model, images, text, needle):
    f = tmp_path / "p.yaml"
    f.write_text(text)
    rc, _, err = cli(capsys, "predict", tiny_model, images, "--out", tmp_path / "out",
                     "--params", f)
    one_line_error(rc, err, needle)
    assert not (tmp_path / "out").exists()


def test_parameter_flags_out_of_range(capsys, tmp_path, tiny_model, images, slide_tif):
    rc, _, err = cli(capsys, "predict", tiny_model, images, "--out", tmp_path / "out",
                     "--bg-exponent", "-3")
    one_line_error(rc, err, "bg_exponent=-3.0 is outside")
    rc, _, err = cli(capsys, "cam", slide_tif, "--model", tiny_model, "--out",
                     tmp_path / "c.zarr", "--scales", "0")
    one_line_error(rc, err, "scales")
    nothing_left(tmp_path, "out", "c.zarr")


def test_missing_parameter_file(capsys, tmp_path, tiny_model, images):
    rc, _, err = cli(capsys, "predict", tiny_model, images, "--out", tmp_path / "out",
                     "--params", tmp_path / "nope.yaml")
    one_line_error(rc, err, "cannot read parameter file")


# ========== training data

def test_train_cls_names_its_bad_files_once(capsys, tmp_path):
    d = tmp_path / "patches"
    d.mkdir()
    rng = np.random.default_rng(3)
    for i, lab in enumerate(("[1, 0, 0]", "[0, 1, 0]", "[0, 0, 1]", "[1, 1, 0]")):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), np.uint8)).save(d / f"p{i}-{lab}.png")
    (d / "broken-[1, 0, 0].png").write_bytes(b"not a png")
    (d / "nolabel.png").write_bytes((d / "p0-[1, 0, 0].png").read_bytes())
    rc, out, err = cli(capsys, "train-cls", d, "--out", tmp_path / "m.safetensors",
                       "--on-bad", "stop")
    assert rc == 2
    both = out + err
    for name in ("broken-[1, 0, 0].png", "nolabel.png"):
        assert sum(name in ln for ln in both.splitlines()) == 2  # the report + the error line
    errors = [ln for ln in err.splitlines() if ": error: " in ln]
    assert len(errors) == 1 and "2 bad input(s)" in errors[0] and "--on-bad skip" in errors[0]
    assert not (tmp_path / "m.safetensors").exists()


def test_train_cls_with_no_usable_patch(capsys, tmp_path):
    d = tmp_path / "patches"
    d.mkdir()
    (d / "nolabel.png").write_bytes(png_header(8, 8))
    rc, _, err = cli(capsys, "train-cls", d, "--out", tmp_path / "m.safetensors")
    one_line_error(rc, err, "no usable training patches")
    assert not (tmp_path / "m.safetensors").exists()


# ========== logs

def test_progress_does_not_flood_a_log(capsys):
    from wsss_napari.progress import Progress, run_to_end

    def job():
        for i in range(5000):
            yield Progress("tiles", i + 1, 5000)
        for i in range(100):
            yield Progress("merge", i + 1, 100)
        return "done"

    assert run_to_end(job(), show=True) == "done"
    err = capsys.readouterr().err  # pytest's stderr is not a terminal
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.strip()]
    assert lines == ["tiles: 0/5000", "tiles: 5000/5000", "merge: 0/100", "merge: 100/100"]
    assert "\r" not in err


# ========== napari

@pytest.mark.gui
def test_unknown_mpp_warning_reaches_napari(make_napari_viewer, qtbot, tmp_path, tiny_model):
    import timm  # noqa: F401 - load triton's LLVM before Mesa's (see _widgets/conftest.py)
    from napari.utils.notifications import notification_manager

    from wsss_napari.params import CamParams
    from wsss_napari.sample.synth import make_tissue

    rgb, _ = make_tissue(256, 256, seed=4)
    p = tmp_path / "no-mpp.png"  # a PNG states no microns per pixel
    Image.fromarray(np.asarray(rgb, np.uint8)).save(p)
    seen: list[str] = []

    def on_notification(event):
        seen.append(str(getattr(event, "message", event)))

    viewer = make_napari_viewer(show=False)
    notification_manager.notification_ready.connect(on_notification)
    try:
        viewer.open(str(p), plugin="wsss-napari")
        _, cam = viewer.window.add_plugin_dock_widget("wsss-napari", "CAM")
        cam.model_source = str(tiny_model)
        cam.region_mode = "Whole slide"
        cam.params = CamParams(scales=(1.0,))
        with qtbot.waitSignal(cam.run().finished, timeout=60_000):
            pass
        qtbot.waitUntil(lambda: any("microns-per-pixel is unknown" in s for s in seen),
                        timeout=10_000)
    finally:
        notification_manager.notification_ready.disconnect(on_notification)
    assert sum("microns-per-pixel is unknown" in s for s in seen) == 1
