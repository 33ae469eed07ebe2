"""A region with a non-zero origin, exported in every format, lands on the slide's true pixels.

The generated slide is not square and the region is off the diagonal (y 100, x 600), so a
swapped origin puts the map where the truth differs: the checks compare each exported file,
read back by level-0 coordinates only, with the synthetic truth at those coordinates, and
also show that the transposed placement would fail them.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from wsss_napari.cli import main
from wsss_napari.params import CamParams, ExportFormat, PostprocParams
from wsss_napari.region import MaskGeometry, Region
from wsss_napari.sample.synth import truth_under

SEED, H, W = 4, 1024, 1536
REGION = Region(y=100, x=600, height=300, width=300)
#: Background only where glass is (the tiny random model's CAMs never win it): the map's
#: glass follows the slide's pixels, which the truth knows.
PARAMS = PostprocParams(bg_exponent=128.0, score_threshold=0.0, min_area_pct=0.0,
                        min_region=0, island_rule=False)
FORMATS = ("m.geojson", "m.ome.tif", "m.png", "m.csv")


@pytest.fixture(scope="module")
def slide_path(tmp_path_factory):
    from wsss_napari.sample.synth import write_pyramidal_tiff

    return write_pyramidal_tiff(tmp_path_factory.mktemp("slide") / "s.tif", H, W, seed=SEED,
                                tile=256, mpp=0.5)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    from wsss_napari.models.checkpoint import save_model
    from wsss_napari.models.config import ModelConfig
    from wsss_napari.models.registry import build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="test_resnet", input_size=64, mpp=1.0))
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_model(model.eval(), path)
    return path


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def check_map(labels: np.ndarray, geometry: MaskGeometry) -> None:
    """A map (label 3 = glass here) read back with its geometry matches the true glass."""
    assert (geometry.y, geometry.x) == (REGION.y, REGION.x)
    truth = truth_under(SEED, H, W, geometry, labels.shape)
    assert iou(labels == 3, truth == 3) > 0.8
    swapped = MaskGeometry(y=geometry.x, x=geometry.y, downsample=geometry.downsample)
    assert iou(labels == 3, truth_under(SEED, H, W, swapped, labels.shape) == 3) < 0.3


def check_geojson(path) -> None:
    """Polygons rasterised at level-0 pixel centres over the region match the true tissue;
    every polygon is valid (OGC)."""
    import shapely
    from shapely.geometry import shape

    fc = json.loads(path.read_text())
    geoms = [shape(f["geometry"]) for f in fc["features"]]
    assert geoms and all(g.is_valid for g in geoms)
    union = shapely.union_all(geoms)
    ys, xs = np.mgrid[REGION.y:REGION.y1:2, REGION.x:REGION.x1:2] + 0.5
    covered = shapely.contains_xy(union, xs, ys)
    level0 = MaskGeometry(y=REGION.y, x=REGION.x, downsample=2)
    truth = truth_under(SEED, H, W, level0, covered.shape)
    assert iou(covered, truth != 3) > 0.8
    swapped = MaskGeometry(y=REGION.x, x=REGION.y, downsample=2)
    assert iou(covered, truth_under(SEED, H, W, swapped, covered.shape) != 3) < 0.5


def check_export(path) -> None:
    """Each format read back by its own geometry record (not by the writer's convention)."""
    from wsss_napari.io.export import read_exported_mask, read_png_meta, read_rle_csv, sidecar_path

    name = path.name
    if name.endswith(".geojson"):
        check_geojson(path)
    elif name.endswith(".ome.tif"):
        labels, meta = read_exported_mask(path)
        check_map(labels, meta["geometry"])
    elif name.endswith(".png"):
        with Image.open(path) as im:
            labels = np.asarray(im)
        check_map(labels, read_png_meta(path)["geometry"])
    else:  # the CSV has no room for it: its sidecar holds the geometry
        (labels,) = read_rle_csv(path).values()
        side = json.loads(sidecar_path(path).read_text())
        check_map(labels, MaskGeometry.from_dict(side["params"]["export"]["geometry"]))


def test_cli_cam_then_export_every_format_lands_on_the_true_pixels(slide_path, model_path,
                                                                   tmp_path, capsys):
    cams = tmp_path / "cams.zarr"
    params = tmp_path / "p.json"
    params.write_text(json.dumps({"postproc": PARAMS.to_dict()}))
    assert main(["cam", str(slide_path), "--model", str(model_path), "--out", str(cams),
                 "--region", "100", "600", "300", "300", "--scales", "1", "--tile-size",
                 "160", "--halo", "16", "--device", "cpu"]) == 0
    for name in FORMATS:
        assert main(["export", str(cams), "--out", str(tmp_path / name),
                     "--params", str(params)]) == 0, capsys.readouterr().err
        check_export(tmp_path / name)
    out = capsys.readouterr().out
    assert "post-processing: from" in out and "level-0 origin y 100 x 600" in out
    # the exported map carries on: a PNG export re-exported as GeoJSON keeps its place
    assert main(["export", str(tmp_path / "m.png"), "--out", str(tmp_path / "again.geojson")]) == 0
    check_geojson(tmp_path / "again.geojson")
    # without --params: the model's recommendation stored with the CAMs, else the defaults
    assert main(["export", str(cams), "--out", str(tmp_path / "d.geojson")]) == 0
    assert "post-processing: defaults" in capsys.readouterr().out
    # an interrupted store is not exported as if its missing tiles were glass
    import zarr

    zarr.open_group(str(cams), mode="a")["done"][0, 0] = 0
    assert main(["export", str(cams), "--out", str(tmp_path / "u.geojson")]) == 2
    assert "is unfinished (1 of 1 tiles" in capsys.readouterr().err
    assert not (tmp_path / "u.geojson").exists()


def test_a_mask_without_geometry_is_exported_only_when_stated(tmp_path, capsys):
    mask = np.full((40, 60), 3, np.uint8)  # background ...
    mask[10:20, 30:50] = 1  # ... and one stroma rectangle
    plain = tmp_path / "plain.png"
    Image.fromarray(mask).save(plain)  # made elsewhere: no geometry
    out = tmp_path / "m.geojson"
    assert main(["export", str(plain), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "does not say where it lies" in err and len(err.splitlines()) == 1
    assert not out.exists()
    assert main(["export", str(plain), "--out", str(out), "--downsample", "4",
                 "--region-origin", "100", "600"]) == 0
    fc = json.loads(out.read_text())
    xs, ys = zip(*[p for f in fc["features"] for p in f["geometry"]["coordinates"][0]],
                 strict=True)
    assert (min(xs), max(xs), min(ys), max(ys)) == (600 + 30 * 4, 600 + 50 * 4,
                                                    100 + 10 * 4, 100 + 20 * 4)
    assert fc["wsss_napari"]["geometry"] == {"y": 100, "x": 600, "downsample": 4, "mpp": None,
                                             "slide": ""}
    assert main(["export", str(plain), "--out", str(tmp_path / "l0.geojson"),
                 "--assume-level0"]) == 0
    # a mask that knows its place refuses another one; the old --origin X Y is gone
    assert main(["export", str(out), "--out", str(tmp_path / "x.geojson")]) == 2  # not a mask
    capsys.readouterr()
    png = tmp_path / "placed.png"
    assert main(["export", str(plain), "--out", str(png), "--downsample", "4"]) == 0
    assert main(["export", str(png), "--out", str(tmp_path / "y.geojson"),
                 "--downsample", "2"]) == 2
    assert "drop the geometry flags" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["export", str(png), "--out", str(tmp_path / "z.geojson"), "--origin", "1", "2"])


@pytest.mark.gui
def test_widgets_and_file_save_place_a_region_on_the_true_pixels(make_napari_viewer, qtbot,
                                                                 slide_path, model_path,
                                                                 tmp_path, monkeypatch):
    """The same region through the GUI: a Shapes ROI -> CAM widget -> tuning widget -> the
    Export widget (every format) and File > Save (napari's writer)."""
    pytest.importorskip("napari")
    import timm  # noqa: F401 - before napari's OpenGL (see tests/_widgets/conftest.py)

    from wsss_napari.labels_encoding import core_labels

    monkeypatch.setenv("WSSS_CACHE_DIR", str(tmp_path / "cache"))
    viewer = make_napari_viewer(show=False)
    (slide_layer,) = viewer.open(str(slide_path), plugin="wsss-napari")
    y0, x0, y1, x1 = REGION.y, REGION.x, REGION.y1, REGION.x1
    roi = viewer.add_shapes([np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]])],
                            shape_type="rectangle", scale=slide_layer.scale[-2:],
                            translate=slide_layer.translate[-2:], units=slide_layer.units[-2:],
                            name="ROI")
    _, cam = viewer.window.add_plugin_dock_widget("wsss-napari", "CAM")
    _, tune = viewer.window.add_plugin_dock_widget("wsss-napari", "Pseudo-mask tuning")
    _, export = viewer.window.add_plugin_dock_widget("wsss-napari", "Export")
    cam.model_source = str(model_path)
    cam.region_mode = "Shapes ROI"
    cam.shapes_combo.layer = roi
    cam.params = CamParams(scales=(1.0,), tile_size=160, halo=16, device="cpu")
    with qtbot.waitSignal(cam.run().finished, timeout=120_000):
        pass
    assert cam.last_result.region == REGION
    qtbot.waitUntil(lambda: tune.mask_layer is not None and not tune.busy, timeout=30_000)
    tune.params = PARAMS
    qtbot.waitUntil(lambda: not tune.busy and tune.mask_layer.metadata["wsss"][
        "postproc_params"] == PARAMS, timeout=30_000)
    mask_layer = tune.mask_layer
    geo = mask_layer.metadata["wsss"]["geometry"]
    check_map(core_labels(mask_layer.data, mask_layer.metadata), geo)  # layer encoding -> labels
    # shown where it lies: map pixel (0, 0) sits on the level-0 centre of its 8 x 8 block
    centre = (y0 + (geo.downsample - 1) / 2, x0 + (geo.downsample - 1) / 2)
    np.testing.assert_allclose(mask_layer.data_to_world((0, 0)),
                               slide_layer.data_to_world(centre))

    export.mask_combo.layer = mask_layer
    export.folder = tmp_path / "out"
    export.name_edit.setText("m")
    export.formats = tuple(ExportFormat)
    with qtbot.waitSignal(export.export().finished, timeout=60_000):
        pass
    for name in FORMATS:
        check_export(tmp_path / "out" / name)
    for name in FORMATS:  # File > Save Selected Layers, through the plugin's writer
        path = tmp_path / "saved" / name
        path.parent.mkdir(exist_ok=True)
        assert mask_layer.save(str(path), plugin="wsss-napari")
        check_export(path)


def test_predict_and_pseudo_masks_carry_their_geometry(tmp_path):
    """Patch masks written by ``predict`` and ``pseudo`` say where they lie (on their image)
    and export without geometry flags."""
    from wsss_napari.cli._predict import write_palette_png
    from wsss_napari.io.export import read_png_meta
    from wsss_napari.train.pseudo import save_mask_png

    mask = np.full((24, 32), 3, np.uint8)
    mask[4:10, 8:20] = 0
    write_palette_png(mask, tmp_path / "a.png", MaskGeometry(slide="a.jpg"))
    save_mask_png(mask, tmp_path / "b.png")
    assert read_png_meta(tmp_path / "a.png")["geometry"] == MaskGeometry(slide="a.jpg")
    assert read_png_meta(tmp_path / "b.png")["geometry"] == MaskGeometry(slide="b.png")
    for name in ("a", "b"):
        assert main(["export", str(tmp_path / f"{name}.png"),
                     "--out", str(tmp_path / f"{name}.geojson")]) == 0
        (f,) = json.loads((tmp_path / f"{name}.geojson").read_text())["features"]
        assert shapely_area(f) == 6 * 12
        with Image.open(tmp_path / f"{name}.png") as im:
            np.testing.assert_array_equal(np.asarray(im), mask)


def shapely_area(feature: dict) -> float:
    from shapely.geometry import shape

    return shape(feature["geometry"]).area
