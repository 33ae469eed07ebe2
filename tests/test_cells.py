"""Per-cell labels: nuclei from generated and real H&E, classes from CAMs, tile borders
counted once, the cells CLI (CSV + QuPath GeoJSON) and bad instance layers."""

from __future__ import annotations

import csv
import json
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from wsss_napari import WsssError
from wsss_napari.cells import classify_instances, segment_nuclei, slide_cells, slide_threshold
from wsss_napari.io.slide import Slide
from wsss_napari.params import CellParams
from wsss_napari.progress import run_to_end

PINK, PURPLE = np.array([235, 170, 210]), np.array([90, 50, 150])


def _discs(shape, centres, r=6, seed=0):
    """Pink eosin background with purple haematoxylin discs at ``centres`` (y, x)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    img = np.broadcast_to(PINK, (*shape, 3)).astype(np.float64).copy()
    for cy, cx in centres:
        d = np.hypot(yy - cy, xx - cx) <= r
        img[d] = PURPLE
    img += rng.normal(0, 3, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


GRID = [(y, x) for y in range(10, 250, 24) for x in range(10, 310, 24)]


def test_builtin_segmentation_finds_each_disc_and_splits_touching_ones():
    centres = [(20, 20), (20, 60), (60, 40), (100, 100), (100, 110)]  # the last two touch
    rgb = _discs((128, 160), centres)
    labels = segment_nuclei(rgb, slide_threshold(rgb), CellParams(min_area=20))
    assert labels.max() == len(np.unique(labels)) - 1 == 5
    for cy, cx in centres[:3]:
        assert labels[cy, cx] > 0
    assert labels[100, 100] != labels[100, 110]  # watershed split the touching pair


def test_classes_come_from_the_cam_under_each_nucleus():
    inst = np.zeros((40, 80), np.int32)
    inst[10:16, 10:16] = 1   # left: class 0
    inst[10:16, 60:66] = 2   # right: class 1
    inst[30:34, 38:44] = 3   # on the border between both
    cams = np.zeros((3, 10, 20), np.float32)  # downsample 4, origin (0, 0) + offset below
    cams[0, :, :10] = 0.8
    cams[1, :, 10:] = 0.6
    t = classify_instances(inst, cams, offset=(100, 200), cam_origin=(100, 200),
                           cam_downsample=4.0)
    assert list(t.label[:2]) == [0, 1]
    np.testing.assert_allclose(t.confidence[:2], [1.0, 1.0])
    np.testing.assert_allclose(t.centroid_y[:2], [113.0, 113.0])  # level-0 pixel centres
    np.testing.assert_allclose(t.centroid_x[:2], [213.0, 263.0])
    # the third covers 2 columns of class 0 (0.8) and 4 of class 1 (0.6): means .267 / .4
    assert t.area[0] == 36 and t.label[2] == 1
    np.testing.assert_allclose(t.confidence[2], 0.4 / (0.4 + 0.8 / 3), rtol=1e-5)
    # dilation reaches a class the nucleus itself does not touch
    cams2 = np.zeros((3, 10, 20), np.float32)
    cams2[2, 1, 2] = 1.0  # one CAM pixel just above-left of nucleus 1 (level-0 rows 4-8)
    assert classify_instances(inst, cams2, (0, 0), (0, 0), 4.0).mean_cam[0, 2] == 0
    assert classify_instances(inst, cams2, (0, 0), (0, 0), 4.0, dilate=3).mean_cam[0, 2] > 0


def _cams_for(shape, ds=4.0):
    h, w = int(np.ceil(shape[0] / ds)), int(np.ceil(shape[1] / ds))
    cams = np.zeros((3, h, w), np.float32)
    cams[0, :, : w // 2] = 1.0
    cams[1, :, w // 2:] = 1.0
    return SimpleNamespace(cams=cams, downsample=ds, origin=(0.0, 0.0),
                           class_names=("tumor", "stroma", "normal"))


@pytest.mark.parametrize("tile", [64, 100, 4096])
def test_cells_on_tile_borders_are_counted_once(tile, tmp_path):
    rgb = _discs((256, 320), GRID)
    slide = Slide.from_arrays([rgb], mpp=0.5, name="discs")
    res = run_to_end(slide_cells(slide, _cams_for(rgb.shape), tmp_path,
                                 CellParams(tile=tile, halo=16, min_area=20,
                                            nucleus_threshold=0.05)))
    assert res.n_cells == len(GRID)
    with open(res.csv_path) as fh:
        rows = list(csv.DictReader(fh))
    got = np.array([(float(r["centroid_y_px"]), float(r["centroid_x_px"])) for r in rows])
    want = np.array(GRID, float) + 0.5  # disc centre pixels, at their pixel centres
    dist = np.hypot(*(got[:, None, :] - want[None, :, :]).transpose(2, 0, 1))
    assert dist.min(axis=1).max() < 1.0  # every cell sits on a disc
    assert len(set(dist.argmin(axis=1))) == len(GRID)  # and every disc has exactly one cell
    for r in rows:
        expected = "tumor" if float(r["centroid_x_px"]) < 160 else "stroma"
        assert r["class"] == expected
        assert float(r["centroid_x_um"]) == pytest.approx(float(r["centroid_x_px"]) * 0.5,
                                                          abs=0.01)
    gj = json.loads(res.geojson_path.read_text())
    assert len(gj["features"]) == len(rows)
    f0 = gj["features"][0]
    assert f0["properties"]["objectType"] == "detection"
    assert f0["properties"]["classification"]["name"] in ("tumor", "stroma")
    ring = np.asarray(f0["geometry"]["coordinates"][0])
    assert (ring[0] == ring[-1]).all() and len(ring) >= 5


def test_real_he_nuclei_are_haematoxylin_rich(shared_data):
    from wsss_napari.cells import haematoxylin

    path = shared_data / "wsss4luad" / "validation" / "img" / "00.png"
    if not path.is_file():
        pytest.skip(f"no {path}")
    rgb = np.asarray(Image.open(path).convert("RGB"))
    labels = segment_nuclei(rgb, slide_threshold(rgb))
    n = labels.max()
    assert 30 < len(np.unique(labels)) - 1 <= n
    h = haematoxylin(rgb, 0)
    assert h[labels > 0].mean() > 2 * h[labels == 0].mean()


def test_cells_cli_with_real_cam_store_and_bad_instances(tmp_path):
    import tifffile

    from wsss_napari.cli import main
    from wsss_napari.models.cam import CamNet
    from wsss_napari.models.checkpoint import save_model
    from wsss_napari.models.config import ModelConfig

    rgb = _discs((256, 320), GRID)
    img = tmp_path / "slide.png"
    Image.fromarray(rgb).save(img)
    model = tmp_path / "m.safetensors"
    save_model(CamNet(ModelConfig(backbone="test_resnet", input_size=64)), model)
    store = tmp_path / "c.zarr"
    assert main(["cam", str(img), "--model", str(model), "--out", str(store), "--scales", "1",
                 "--tile-size", "320", "--halo", "0", "--no-skip-glass", "--device", "cpu"]) == 0
    out = tmp_path / "cells"
    assert main(["cells", str(img), "--cams", str(store), "--out", str(out),
                 "--min-area", "20", "--tile", "128"]) == 0
    with open(out / "cells.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(GRID)
    assert rows[0]["centroid_x_um"] == ""  # a PNG has no mpp
    assert {r["class"] for r in rows} <= {"tumor", "stroma", "normal"}

    wrong = tmp_path / "wrong.tif"
    tifffile.imwrite(wrong, np.zeros((128, 160), np.int32))  # half the slide's scale
    bad = tmp_path / "bad"
    assert main(["cells", str(img), "--cams", str(store), "--out", str(bad),
                 "--instances", str(wrong)]) == 2
    assert not (bad / "cells.csv").exists() and not (bad / "cells.geojson").exists()
    inst = tmp_path / "inst.tif"
    labels = np.zeros((256, 320), np.int32)
    labels[20:30, 20:30], labels[200:210, 300:310] = 1, 7
    tifffile.imwrite(inst, labels)
    good = tmp_path / "good"
    assert main(["cells", str(img), "--cams", str(store), "--out", str(good),
                 "--instances", str(inst)]) == 0
    with open(good / "cells.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 2


def test_glass_only_image_is_a_clear_error():
    with pytest.raises(WsssError, match="glass or blank"):
        slide_threshold(np.full((64, 64, 3), 245, np.uint8))


def test_region_shaped_instances_match_slide_shaped_ones():
    """Labels of only the region: the tile halo stops at their edge (it used to wrap around
    with negative indices and lose two thirds of the cells)."""
    from wsss_napari.cells import collect_cells
    from wsss_napari.region import Region

    rgb = _discs((256, 320), GRID)
    slide = Slide.from_arrays([rgb], mpp=0.5, name="discs")
    full = segment_nuclei(rgb, 0.05, CellParams(min_area=20))
    region = Region(y=20, x=30, height=200, width=250)
    params = CellParams(tile=100, halo=16)
    whole = run_to_end(collect_cells(slide, _cams_for(rgb.shape), params, region, full))[0]
    cut = run_to_end(collect_cells(slide, _cams_for(rgb.shape), params, region,
                                   full[20:220, 30:280]))[0]
    assert len(whole) > 80 and len(cut) == len(whole)
    a = np.stack([whole.centroid_y, whole.centroid_x], 1)
    b = np.stack([cut.centroid_y, cut.centroid_x], 1)
    dist = np.hypot(*(a[:, None, :] - b[None, :, :]).transpose(2, 0, 1)).min(axis=1)
    assert np.median(dist) == 0 and dist.max() < 4  # only nuclei cut by the region move
    np.testing.assert_array_equal(np.sort(whole.label), np.sort(cut.label))
