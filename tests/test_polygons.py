"""Every exported polygon is valid under the OGC rules (shapely), holes are holes, and a
polygon's area is its pixel count: adversarial masks, generated tissue and the real CMU-1."""

from __future__ import annotations

import json

import numpy as np
import pytest
import shapely
from shapely.geometry import shape

from wsss_napari.io.export import export_geojson, mask_to_geojson
from wsss_napari.io.polygons import region_polygons, simplified, to_shapely
from wsss_napari.region import MaskGeometry

TOLERANCES = (0.0, 0.5, 1.0, 2.0, 5.0)


def _checker(n: int) -> np.ndarray:
    return (np.indices((n, n)).sum(0) % 2).astype(np.uint8)


def _cases() -> dict[str, np.ndarray]:
    cases = {"one pixel": np.ones((1, 1), np.uint8), "checkerboard": _checker(9),
             "inverted checkerboard": 1 - _checker(9)}
    m = np.zeros((9, 9), np.uint8)
    m[1:8, 1:8] = 1
    m[2:7, 2:7] = 0
    m[3:6, 3:6] = 1
    m[4, 4] = 0
    cases["rings in rings"] = m
    # a U whose tips touch diagonally: the enclosed pocket is a hole touching the exterior
    cases["pinched exterior"] = np.array([[1, 1, 1, 1], [1, 0, 0, 1], [1, 0, 1, 0],
                                          [1, 1, 1, 0]], np.uint8)
    h = np.ones((6, 6), np.uint8)
    h[2, 2] = h[3, 3] = 0  # two holes touching at a corner
    cases["pinched hole"] = h
    r = np.ones((8, 8), np.uint8)
    r[2, 2] = r[3, 3] = r[4, 4] = r[3, 5] = r[2, 4] = 0  # a diagonal ring of holes ...
    cases["island in a ring of diagonal holes"] = r  # ... around an island (3, 4)
    d = np.zeros((6, 6), np.uint8)
    d[np.arange(6), np.arange(6)] = 1  # a diagonal line: six polygons touching at corners
    cases["diagonal line"] = d
    rng = np.random.default_rng(0)
    cases["noise"] = (rng.random((40, 40)) < 0.5).astype(np.uint8)
    return cases


CASES = _cases()


@pytest.mark.parametrize("name", list(CASES))
def test_adversarial_masks_give_valid_polygons_of_exact_area(name):
    binary = CASES[name]
    polys = region_polygons(binary)
    geoms = [to_shapely(p) for p in polys]
    assert all(g.is_valid for g in geoms), [shapely.is_valid_reason(g) for g in geoms]
    assert sum(g.area for g in geoms) == binary.sum()  # corners on pixel corners, exact
    # each polygon is one 4-connected region: rasterised back at pixel centres exactly
    ys, xs = np.mgrid[:binary.shape[0], :binary.shape[1]] + 0.5
    union = shapely.union_all(geoms)
    np.testing.assert_array_equal(shapely.contains_xy(union, xs, ys), binary != 0)
    for tol in TOLERANCES:
        for multi in (False, True):
            assert all(g.is_valid for g in simplified(polys, tol, as_multi=multi)), (tol, multi)


def test_holes_are_holes_and_pinches_are_split():
    (poly,) = region_polygons(CASES["pinched exterior"])
    assert len(poly) == 2  # the pocket the tips enclose is a hole touching the exterior
    assert to_shapely(poly).exterior.intersection(to_shapely(poly).interiors[0]).geom_type \
        == "Point"
    (poly,) = region_polygons(CASES["pinched hole"])
    assert len(poly) == 3  # two holes touching at one corner, not one self-touching ring
    polys = region_polygons(CASES["rings in rings"])
    assert sorted(len(p) for p in polys) == [2, 2]  # outer ring and inner ring, each a hole


@pytest.mark.parametrize("group", ["region", "class"])
def test_every_exported_feature_is_valid_at_every_simplification(tmp_path, group):
    from wsss_napari.sample.synth import mask_region

    mask = mask_region(11, 256, 384, 0, 0, 256, 384)  # real-looking classes, thin septa
    mask[:8, :8] = _checker(8) * 2  # plus adversarial corners
    geo = MaskGeometry(y=1000, x=3000, downsample=4)
    for tol in TOLERANCES:
        out = export_geojson(mask, tmp_path / f"m{tol}.geojson", geometry=geo, simplify=tol,
                             group=group, include_background=True)
        fc = json.loads(out.read_text())
        geoms = [shape(f["geometry"]) for f in fc["features"]]
        assert all(g.is_valid for g in geoms), tol
        for f, g in zip(fc["features"], geoms, strict=True):
            n = int((mask == f["properties"]["label"]).sum())
            if tol <= 1:
                # areas in level-0 px^2: exact unsimplified, within 2 % simplified by 1 px
                total = sum(shape(h["geometry"]).area for h in fc["features"]
                            if h["properties"]["label"] == f["properties"]["label"])
                assert total == pytest.approx(n * 16, rel=0 if tol == 0 else 0.02)
            assert g.bounds[0] >= 3000 and g.bounds[1] >= 1000  # level-0 (x, y) frame


@pytest.mark.shared
@pytest.mark.slow
def test_real_cmu1_map_polygons_are_valid(shared_slides, tmp_path):
    """CAMs of a CMU-1 region with the default model, post-processed with its recommended
    parameters and exported: every polygon valid, areas = pixel counts."""
    import torch

    from wsss_napari.inference.slide_cam import slide_cams
    from wsss_napari.inference.slide_mask import slide_mask
    from wsss_napari.io.slide import Slide
    from wsss_napari.models.checkpoint import load_model
    from wsss_napari.params import CamParams
    from wsss_napari.progress import run_to_end
    from wsss_napari.region import Region

    path = shared_slides / "CMU-1-Small-Region.svs"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    torch.set_num_threads(2)
    model = load_model("default")
    with Slide.open(path) as slide:
        params = CamParams(device="cpu", scales=(1.0,), tile_size=256, halo=32)
        cams = run_to_end(slide_cams(slide, model, params,
                                     region=Region(y=700, x=900, height=256, width=512),
                                     out=tmp_path / "cams.zarr"))
        mask, geo = slide_mask(cams, slide=slide)
    assert (geo.y, geo.x) == (700, 900) and len(np.unique(mask)) > 1
    for tol in TOLERANCES:
        fc = mask_to_geojson(mask, geometry=geo, simplify=tol)
        geoms = [shape(f["geometry"]) for f in fc["features"]]
        assert geoms and all(g.is_valid for g in geoms), tol
        if tol == 0:
            for lab in {f["properties"]["label"] for f in fc["features"]}:
                ours = [g for f, g in zip(fc["features"], geoms, strict=True)
                        if f["properties"]["label"] == lab]
                # coordinates are written rounded to 0.001 level-0 px: each moves an edge by
                # at most 0.0005 * sqrt(2), so the area may differ by that times the perimeter
                slack = 1e-3 * sum(g.length for g in ours)
                assert sum(g.area for g in ours) == pytest.approx(
                    (mask == lab).sum() * geo.downsample ** 2, abs=slack)
