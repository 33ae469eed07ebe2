"""Exports reopen to the same mask: OME-TIFF, palette PNG, GeoJSON polygons, RLE CSV."""

from __future__ import annotations

import errno
import json
import os

import numpy as np
import pytest
from PIL import Image

from wsss_napari import WsssError
from wsss_napari.classes import LABEL_NAMES, PALETTE, palette_flat
from wsss_napari.cli import main
from wsss_napari.corrections.store import EditStore
from wsss_napari.io.export import (
    export_geojson,
    export_mask,
    export_ome_tiff,
    export_png,
    export_rle,
    geojson_to_mask,
    read_exported_mask,
    read_rle_csv,
    rle_decode,
    rle_encode,
)
from wsss_napari.params import ExportParams, PostprocParams, RunRecord
from wsss_napari.region import MaskGeometry
from wsss_napari.sample.synth import mask_region

#: a mask at level 0 of its own image (patch-like)
LEVEL0 = MaskGeometry()


@pytest.fixture(scope="module")
def mask():
    # tissue classes (blob-like regions; the true mask's thin septa would dominate the
    # simplification error)
    m = mask_region(7, 300, 420, 0, 0, 300, 420, white_as_background=False)
    m[:20, :30] = 255  # an unlabelled corner
    m[150:160, 200:210] = 2  # a small island (likely inside another class)
    m[152:155, 203:206] = 0  # with a hole-filling island inside
    m[200:260, 300:380] = 1  # a stroma ring ...
    m[215:245, 320:360] = 3  # ... around a glass hole ...
    m[225:235, 330:340] = 0  # ... with tumor inside
    m[100, 100] = 1  # a one-pixel region
    return m


def _record():
    return RunRecord.make(PostprocParams(), model_hash="abc123", slide="case1.svs", slide_mpp=0.25)


def _sidecar(path):
    return json.loads(open(f"{path}.run.json").read())


def test_ome_tiff_pyramid_round_trip(tmp_path, mask):
    geo = MaskGeometry(y=64, x=32, downsample=4, mpp=0.25, slide="case1.svs")
    out = export_ome_tiff(mask, tmp_path / "m.ome.tif", geometry=geo, record=_record(), tile=128)
    labels, meta = read_exported_mask(out)
    np.testing.assert_array_equal(labels, mask)
    assert meta["class_names"] == list(LABEL_NAMES)
    assert meta["class_colors"] == [list(c) for c in PALETTE]
    assert meta["pixel_size_um"] == pytest.approx(1.0)
    assert meta["geometry"] == geo
    assert meta["record"]["model_hash"] == "abc123"
    # pyramid: halves until it fits a tile, nearest neighbour keeps label values
    assert meta["levels"] == [(300, 420), (150, 210), (75, 105)]
    small, smeta = read_exported_mask(out, level=2)
    assert set(np.unique(small)) <= set(np.unique(mask))
    np.testing.assert_array_equal(small, mask[::4, ::4])
    assert smeta["pixel_size_um"] == pytest.approx(4.0)
    side = _sidecar(out)
    assert side["model_hash"] == "abc123" and side["params"]["export"]["format"] == "ome-tiff"
    assert side["params"]["postproc"]["bg_exponent"] == PostprocParams().bg_exponent


def test_ome_tiff_from_lazy_zarr_edit_store(tmp_path, mask):
    """An edit store is exported tile by tile, merged over its base mask."""
    store = EditStore.open_or_create(tmp_path / "edits.zarr", "s", mask.shape, 4.0, tile=64)
    store.write(100, 100, np.full((50, 60), 1, np.uint8))
    view = store.merged_view(mask)
    out = export_ome_tiff(view, tmp_path / "merged.ome.tif", geometry=store.geometry, tile=64)
    labels, meta = read_exported_mask(out)
    expect = mask.copy()
    expect[100:150, 100:160] = 1
    np.testing.assert_array_equal(labels, expect)
    # unknown mpp is never guessed
    assert "pixel_size_um" not in meta and meta["geometry"].mpp is None


def test_png_has_the_wsss4luad_palette(tmp_path, mask):
    out = export_png(mask, tmp_path / "patch.png", geometry=LEVEL0, record=_record())
    with Image.open(out) as im:
        assert im.mode == "P"
        assert im.getpalette()[: 3 * len(PALETTE)] == palette_flat()[: 3 * len(PALETTE)]
        np.testing.assert_array_equal(np.asarray(im), mask)
    assert _sidecar(out)["slide"] == "case1.svs"


@pytest.mark.parametrize("simplify", [0.0, 1.0])
def test_geojson_polygons_rasterise_back(tmp_path, mask, simplify):
    from skimage.draw import polygon2mask

    ds, origin = 4.0, (1000.0, 2000.0)  # level-0 x, y of the mask's corner
    geo = MaskGeometry(y=origin[1], x=origin[0], downsample=ds)
    out = export_geojson(mask, tmp_path / "m.geojson", geometry=geo,
                         simplify=simplify, include_background=True, record=_record())
    fc = json.loads(out.read_text())
    assert fc["type"] == "FeatureCollection" and fc["features"]
    f0 = fc["features"][0]
    assert f0["type"] == "Feature" and f0["geometry"]["type"] == "Polygon"
    assert f0["properties"]["objectType"] == "annotation"
    names = {f["properties"]["classification"]["name"] for f in fc["features"]}
    assert names == {"Tumor", "Stroma", "Normal", "Background"}
    assert all(f["properties"]["classification"]["color"] == list(PALETTE[f["properties"]["label"]])
               for f in fc["features"])
    assert any(len(f["geometry"]["coordinates"]) > 1 for f in fc["features"])  # holes
    # rasterise independently (skimage, pixel-centre inclusion) at the mask's scale
    back = np.full(mask.shape, 255, np.uint8)
    lookup = {n.capitalize(): i for i, n in enumerate(LABEL_NAMES)}
    for f in fc["features"]:
        rings = f["geometry"]["coordinates"]
        region = np.zeros(mask.shape, bool)
        for k, ring in enumerate(rings):
            xy = (np.asarray(ring) - origin) / ds - 0.5  # level-0 corners -> pixel index
            inside = polygon2mask(mask.shape, xy[:, ::-1])
            region = region | inside if k == 0 else region & ~inside
        back[region] = lookup[f["properties"]["classification"]["name"]]
    for c in range(4):
        a, b = back == c, mask == c
        iou = (a & b).sum() / (a | b).sum()
        assert iou > (0.999 if simplify == 0 else 0.98), (c, iou)
    # the library's own rasteriser agrees (used by the GUI loop test)
    again = geojson_to_mask(out, mask.shape, geometry=geo)
    assert (again == mask).mean() > (0.999 if simplify == 0 else 0.98)


def test_geojson_one_multipolygon_per_class(tmp_path, mask):
    out = export_mask(mask, tmp_path / "m.geojson",
                      ExportParams(format="geojson", geojson_group="class", simplify=0),
                      geometry=LEVEL0)
    fc = json.loads(out.read_text())
    assert sorted(f["properties"]["name"] for f in fc["features"]) == ["Normal", "Stroma", "Tumor"]
    assert all(f["geometry"]["type"] == "MultiPolygon" for f in fc["features"])
    back = geojson_to_mask(fc, mask.shape, geometry=LEVEL0)
    fg = mask < 3
    assert (back[fg] == mask[fg]).all()


@pytest.mark.parametrize("order", ["F", "C"])
def test_rle_round_trip(tmp_path, mask, order):
    b = np.array([[0, 1, 1], [1, 0, 1]], bool)
    assert rle_encode(b, "F") == "2 2 5 2" and rle_encode(b, "C") == "2 3 6 1"
    out = export_rle({"a": mask, "b": mask[:50, :60]}, tmp_path / "m.csv", order=order,
                     geometry=LEVEL0, record=_record())
    rows = out.read_text().splitlines()
    assert rows[0] == "image_id,class,rle,height,width" and len(rows) == 1 + 2 * 4
    decoded = read_rle_csv(out, order=order)
    np.testing.assert_array_equal(decoded["a"], mask)
    np.testing.assert_array_equal(decoded["b"], mask[:50, :60])
    assert rle_decode("", (2, 2)).sum() == 0


def test_unwritable_target_gives_a_clear_error_and_no_file(tmp_path, mask):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(WsssError, match="cannot create output folder"):
        export_png(mask, blocker / "sub" / "m.png", geometry=LEVEL0)
    if os.geteuid() != 0:  # root ignores permissions
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        try:
            with pytest.raises(WsssError, match="not writable"):
                export_ome_tiff(mask, ro / "m.ome.tif", geometry=LEVEL0)
        finally:
            ro.chmod(0o700)


class _FailingDisk:
    """A mask whose reads fail part-way with ENOSPC, as a full scratch disk would."""

    def __init__(self, m):
        self.m, self.shape, self.dtype, self.reads = m, m.shape, m.dtype, 0

    def __getitem__(self, key):
        self.reads += 1
        if self.reads > 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self.m[key]


def test_full_disk_midway_leaves_no_half_written_file(tmp_path, mask):
    src = _FailingDisk(mask)
    with pytest.raises(WsssError, match="No space left"):
        export_ome_tiff(src, tmp_path / "m.ome.tif", geometry=LEVEL0, tile=64)
    assert src.reads > 3
    assert list(tmp_path.iterdir()) == []
    # an existing export is not clobbered by a failed one
    good = export_png(mask, tmp_path / "m.png", geometry=LEVEL0)
    before = good.read_bytes()
    with pytest.raises(WsssError):
        export_png(np.zeros((10, 10, 3)), tmp_path / "m.png", geometry=LEVEL0)
    assert good.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.png", "m.png.run.json"]


def test_cli_exports_an_edit_store_over_its_base(tmp_path, mask, capsys):
    base = export_png(mask, tmp_path / "base.png", geometry=MaskGeometry(downsample=2.0))
    store = EditStore.open_or_create(tmp_path / "edits.zarr", {"name": "s", "mpp": 0.5},
                                     mask.shape, 2.0, tile=64)
    store.write(0, 0, np.full((40, 40), 3, np.uint8))
    rec = tmp_path / "job.run.json"
    rec.write_text(_record().to_json())
    for fmt, name in [("ome-tiff", "o.ome.tif"), ("geojson", "o.geojson"), ("rle", "o.csv"),
                      ("png", "o.png")]:
        code = main(["export", str(tmp_path / "edits.zarr"), "--base", str(base), "--out",
                     str(tmp_path / name), "--format", fmt, "--record", str(rec)])
        assert code == 0, capsys.readouterr().err
    labels, meta = read_exported_mask(tmp_path / "o.ome.tif")
    expect = mask.copy()
    expect[:40, :40] = 3
    np.testing.assert_array_equal(labels, expect)
    assert meta["geometry"] == MaskGeometry(downsample=2.0, mpp=0.5, slide="s")
    assert _sidecar(tmp_path / "o.csv")["model_hash"] == "abc123"
    np.testing.assert_array_equal(read_rle_csv(tmp_path / "o.csv")["o"], expect)
    # the format follows the suffix when not given; errors are one clear line
    assert main(["export", str(base), "--out", str(tmp_path / "x.geojson")]) == 0
    assert main(["export", str(base), "--out", str(tmp_path / "x.bin")]) == 2
    assert "cannot tell the export format" in capsys.readouterr().err
