"""Uncertainty maps from cached CAMs, the ranked review queue, its decisions and its CLI."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from wsss_napari import WsssError
from wsss_napari.classes import BACKGROUND, NORMAL, STROMA, TUMOR
from wsss_napari.params import (
    CamParams,
    QueueMode,
    QueueScore,
    UncertaintyMetric,
    UncertaintyParams,
)
from wsss_napari.region import MaskGeometry
from wsss_napari.review_queue import (
    ACCEPT,
    EXCLUDE,
    RELABEL,
    ReviewQueue,
    build_queue,
    queue_path,
)
from wsss_napari.uncertainty import (
    class_probabilities,
    class_stats,
    expected_gain_map,
    uncertainty_map,
)

torch.set_num_threads(1)


def _cams(h=64, w=96):
    """Tumor left, stroma right, and a 16 x 16 square at rows 8..24, cols 40..56 where
    tumor and stroma tie (the only uncertain place)."""
    cams = np.zeros((3, h, w), np.float32)
    cams[TUMOR, :, : w // 2] = 1.0
    cams[STROMA, :, w // 2:] = 1.0
    cams[TUMOR, 8:24, 40:56] = 0.8
    cams[STROMA, 8:24, 40:56] = 0.8
    return cams


def test_metrics_on_known_probabilities():
    cams = _cams()
    p = class_probabilities(cams, bg_exponent=8.0)
    assert p.shape == (4, 64, 96)
    np.testing.assert_allclose(p.sum(0), 1.0, atol=1e-6)
    margin = uncertainty_map(cams, UncertaintyParams(metric="margin")).values
    # certain pixels: p1 = 1, p2 = 0 -> 0; the tie: p1 == p2 -> 1 (background ~0.2^8)
    assert margin[0, 0] == pytest.approx(0.0, abs=1e-6)
    assert margin[16, 48] == pytest.approx(1.0, abs=1e-4)
    ent = uncertainty_map(cams, UncertaintyParams(metric="entropy")).values
    assert ent[0, 0] == pytest.approx(0.0, abs=1e-6)
    assert ent[16, 48] == pytest.approx(np.log(2) / np.log(4), abs=1e-3)
    # a background mask: glass is certain, tissue shares only the foreground classes
    bg = np.zeros((64, 96), bool)
    bg[:, :4] = True
    um = uncertainty_map(cams, UncertaintyParams(metric="entropy"), background=bg)
    assert (um.labels[:, :4] == BACKGROUND).all() and not um.valid[:, :4].any()
    assert um.values[16, 48] == pytest.approx(np.log(2) / np.log(3), abs=1e-3)
    assert um.labels[0, 10] == TUMOR and um.labels[0, 90] == STROMA


def test_disagreement_needs_per_scale_maps():
    cams = _cams()
    with pytest.raises(WsssError, match="without their per-scale maps.*--keep-scales"):
        uncertainty_map(cams, UncertaintyParams(metric="disagreement"))
    scales = np.stack([cams, cams, cams])
    scales[1, NORMAL, 30:40, 10:20] = 1.0  # one scale of three sees normal there...
    scales[1, TUMOR, 30:40, 10:20] = 0.0
    um = uncertainty_map(cams, UncertaintyParams(metric="disagreement"), scale_cams=scales)
    assert um.values[35, 15] == pytest.approx(1 / 3)
    assert um.values[0, 0] == 0.0 and um.values[16, 48] == 0.0


def test_region_queue_boxes_area_and_classes():
    geo = MaskGeometry(y=1000, x=2000, downsample=8.0, mpp=0.5, slide="s.tif")
    cams = _cams()
    cams[NORMAL, 8:24, 40:56] = 0.3
    um = uncertainty_map(cams, UncertaintyParams(metric="margin"), geometry=geo)
    q = build_queue(um, cams, UncertaintyParams(threshold=0.5, tile=1024, min_area=0),
                    pixel_scale=4)
    assert len(q) == 1
    it = q.items[0]
    assert it.box == (8, 40, 16, 16) and it.area_px == 256 and it.mask.all()
    # level-0 box of map pixels rows 8..24, cols 40..56 at downsample 8 from (1000, 2000)
    r = it.region
    assert (r.y, r.x, r.height, r.width) == (1064, 2320, 128, 128)
    assert it.area_mm2 == pytest.approx(256 * (8 * 0.5) ** 2 * 1e-6)
    assert {it.cls, it.runner_up} == {TUMOR, STROMA}
    assert it.probs[NORMAL] == pytest.approx(0.3 / 1.9, abs=1e-3)
    assert it.score == pytest.approx(1.0, abs=1e-3)
    # a tile grid of 32 model px = 8 map px cuts the square in 2 x 2 items
    q = build_queue(um, cams, UncertaintyParams(tile=32, min_area=0), pixel_scale=4)
    assert sorted(i.box for i in q) == [(8, 40, 8, 8), (8, 48, 8, 8), (16, 40, 8, 8),
                                        (16, 48, 8, 8)]
    # minimum area in model px: 16 x 16 map px = 64 x 64 model px
    assert len(build_queue(um, cams, UncertaintyParams(tile=1024, min_area=64 * 64 + 1),
                           pixel_scale=4)) == 0


def test_tile_queue_is_ranked_by_mean_uncertainty():
    cams = _cams()
    um = uncertainty_map(cams)
    q = build_queue(um, cams, UncertaintyParams(mode=QueueMode.TILE, tile=16, min_area=0))
    assert len(q) == (64 // 16) * (96 // 16)
    scores = [it.score for it in q]
    assert scores == sorted(scores, reverse=True) and [it.rank for it in q] == list(
        range(1, len(q) + 1))
    # the tied square covers tiles (0..1, 2..3) partly: those four lead the queue
    assert {it.box[:2] for it in q.items[:4]} == {(0, 32), (0, 48), (16, 32), (16, 48)}
    q = build_queue(um, cams, UncertaintyParams(mode="tile", tile=16, min_area=0, max_items=3))
    assert len(q) == 3


def test_class_stats_and_expected_gain_on_known_probabilities():
    # pixel 0: surely tumor; pixel 1: tumor 0.6 / stroma 0.4 (both predicted tumor)
    cams = np.zeros((3, 1, 2), np.float32)
    cams[TUMOR, 0] = (1.0, 0.6)
    cams[STROMA, 0, 1] = 0.4
    glass = np.zeros((1, 2), bool)
    union, tp = class_stats(cams, background=glass)
    np.testing.assert_allclose(union, [2.0, 0.4, 0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(tp, [1.6, 0.0, 0.0, 0.0], atol=1e-6)
    # pixel 1: p_stroma / U_stroma + (1 - p_tumor) IoU_tumor / U_tumor, times U_min / 2
    # (unions under 1 px count as 1 px: U_stroma = U_normal = U_min = 1)
    gain = expected_gain_map(cams, np.stack([union, tp]), background=glass)
    assert gain[0, 0] == pytest.approx(0.0, abs=1e-6)
    assert gain[0, 1] == pytest.approx((0.4 / 1.0 + 0.4 * 0.8 / 2.0) * 1.0 / 2, rel=1e-4)


def _gain_cams():
    """Nine 32 px tiles in a row: 3 sure tumor, 3 sure stroma, then A (tumor 0.55 / stroma
    0.45), D (tumor 0.8 / stroma 0.2) and C (stroma 0.8 / normal 0.2: normal is rare)."""
    cams = np.zeros((3, 32, 9 * 32), np.float32)
    cams[TUMOR, :, :96] = 1.0
    cams[STROMA, :, 96:192] = 1.0
    for k, ((c1, v1), (c2, v2)) in enumerate(
            [((TUMOR, 0.55), (STROMA, 0.45)), ((TUMOR, 0.8), (STROMA, 0.2)),
             ((STROMA, 0.8), (NORMAL, 0.2))]):
        cols = slice(192 + 32 * k, 224 + 32 * k)
        cams[c1, :, cols], cams[c2, :, cols] = v1, v2
    return cams


def test_expected_gain_ranks_more_errors_and_rare_class_confusions_first():
    cams = _gain_cams()
    glass = np.zeros(cams.shape[1:], bool)
    um = uncertainty_map(cams, background=glass)
    tiles = UncertaintyParams(mode="tile", tile=32, min_area=0, metric="entropy")
    gain = build_queue(um, cams, tiles.replace(score="expected_gain"), background=glass)
    mean = build_queue(um, cams, tiles, background=glass)
    col = {it.box[1]: it for it in gain.items}
    a, d, c = col[192], col[224], col[256]
    # C (a stroma / normal confusion) before A (more errors, common classes) before D
    # (fewer errors, common classes); sure tiles last with no expected gain
    assert [it.box[1] for it in gain.items[:3]] == [256, 192, 224]
    assert c.score > a.score > d.score > 0.0
    assert all(it.score == pytest.approx(0.0, abs=1e-6) for it in gain.items[3:])
    assert (c.cls, c.runner_up) == (STROMA, NORMAL)
    # entropy ranks D and C alike (same probabilities, other classes): only the gain sees
    # that a normal pixel moves the mIoU more
    ent = {it.box[1]: it.score for it in mean.items}
    assert ent[224] == pytest.approx(ent[256], abs=1e-4) and ent[192] > ent[224]
    # rarity is relative to everything ranked together: with a lot of normal elsewhere
    # (class sizes given), C's normal errors weigh less than A's
    many_normal = class_stats(cams, background=glass) + [[0, 0, 50_000, 0], [0, 0, 40_000, 0]]
    pooled = build_queue(um, cams, tiles.replace(score="expected_gain"), background=glass,
                         stats=many_normal)
    pcol = {it.box[1]: it.score for it in pooled.items}
    assert pooled.items[0].box[1] == 192 and pcol[256] < pcol[192] / 2
    assert gain.score_name == "expected_gain" and mean.score_name == "uncertainty"
    meas = gain.to_geojson()["features"][0]["properties"]["measurements"]
    assert meas["expected_gain"] == c.score and "uncertainty" not in meas


def _store(tmp_path, shape=(128, 192), downsample=4.0):
    from wsss_napari.corrections.store import EditStore

    return EditStore.open_or_create(tmp_path / "s.tif.wsss" / "edits.zarr",
                                    {"name": "s.tif", "size": 123}, shape=shape,
                                    downsample=downsample)


def test_decisions_write_corrections_and_survive_a_restart(tmp_path):
    geo = MaskGeometry(downsample=8.0, mpp=0.5, slide="s.tif")
    cams = _cams()
    um = uncertainty_map(cams, geometry=geo)
    q = build_queue(um, cams, UncertaintyParams(tile=32, min_area=0), pixel_scale=4,
                    slide_id={"name": "s.tif", "path": "/x/s.tif", "size": 123})
    store = _store(tmp_path)  # edits at downsample 4: each map pixel is 2 x 2 store pixels
    first, second, third = q.items[:3]
    q.decide(first, RELABEL, NORMAL, store=store)
    r0, c0, h, w = first.box
    edits = store.read(0, 0, 128, 192)
    assert (edits[2 * r0:2 * (r0 + h), 2 * c0:2 * (c0 + w)] == NORMAL).all()
    assert (edits != 255).sum() == 4 * first.area_px
    q.decide(second, ACCEPT, store=store)
    r0, c0, h, w = second.box
    assert (store.read(2 * r0, 2 * c0, 2 * h, 2 * w) == second.cls).all()
    # exclude: the item's edits are gone, it leaves the queue, training ignores its pixels
    q.decide(second, EXCLUDE, store=store)
    assert (store.read(2 * r0, 2 * c0, 2 * h, 2 * w) == 255).all()
    assert second not in q.active() and len(q.active()) == len(q) - 1
    ex = q.exclusion_mask((128, 192), 4.0)
    assert ex.sum() == 4 * second.area_px and ex[2 * r0:2 * (r0 + h), 2 * c0:2 * (c0 + w)].all()
    assert q.status().startswith("1 of 3 reviewed, 0.001 mm²") and "1 excluded" in q.status()
    q.position = 1
    path = q.save(queue_path(store.root))
    assert path == tmp_path / "s.tif.wsss" / "review_queue.json"

    again = ReviewQueue.load(path, {"name": "s.tif", "path": "/x/s.tif", "size": 123})
    assert [i.id for i in again] == [i.id for i in q]
    assert again.decisions[first.id].label == NORMAL
    assert again.decisions[second.id].action == EXCLUDE
    assert again.current().id == third.id and again.status() == q.status()
    np.testing.assert_array_equal(again.items[0].mask, first.mask)
    assert again.items[0].region == first.region
    with pytest.raises(WsssError, match="built on the maps of another slide"):
        ReviewQueue.load(path, {"name": "t.tif", "path": "/x/t.tif", "size": 9})
    with pytest.raises(WsssError, match="no review queue"):
        ReviewQueue.load(tmp_path / "nope.json")
    with pytest.raises(WsssError, match="needs a class"):
        q.decide(third, RELABEL)


def test_keep_scales_through_a_slide_store_and_the_cli(tmp_path, capsys):
    from wsss_napari.cli import main
    from wsss_napari.inference.multiscale import multiscale_cam
    from wsss_napari.inference.slide_cam import slide_cams
    from wsss_napari.io.slide import Slide
    from wsss_napari.models.config import ModelConfig
    from wsss_napari.models.registry import build_model
    from wsss_napari.progress import run_to_end
    from wsss_napari.sample.synth import write_pyramidal_tiff

    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="test_resnet", input_size=64, mpp=1.0)).eval()
    params = CamParams(device="cpu", scales=(1.0, 1.5), tile_size=128, halo=16,
                       batch_size=32, keep_scales=True)
    rgb = np.random.default_rng(0).integers(0, 255, (96, 80, 3), dtype=np.uint8)
    res = multiscale_cam(model, rgb, params)
    assert res.scale_cams.shape == (2, 3, 96, 80)
    assert multiscale_cam(model, rgb, params.replace(keep_scales=False)).scale_cams is None

    paths = {}
    for name, keep in (("a", True), ("b", False)):
        sp = write_pyramidal_tiff(tmp_path / f"{name}.tif", 512, 512, seed=3, mpp=0.5)
        with Slide.open(sp) as slide:
            out = run_to_end(slide_cams(slide, model, params.replace(keep_scales=keep),
                                        out=tmp_path / f"{name}.zarr"))
        paths[name] = out
    a = paths["a"]
    assert a.scale_cams.shape == (2, *a.cams.shape) and paths["b"].scale_cams is None
    assert a.slide_id["name"] == "a.tif" and a.slide_id["mpp"] == 0.5

    out = tmp_path / "q"
    assert main(["uncertainty", str(a.path), "--out", str(out), "--metric", "disagreement",
                 "--mode", "tile", "--tile", "64", "--min-area", "0"]) == 0
    rows = list(csv.DictReader(open(out / "queue.csv")))
    assert rows and rows[0]["rank"] == "1"
    assert list(rows[0]) == ["rank", "y", "x", "h", "w", "area_mm2", "class", "runner_up",
                             "score", "decision"]
    # 64 model px tiles at 1 um/px on a 0.5 um/px slide = 128 level-0 px
    assert all(float(r["h"]) <= 128 and float(r["w"]) <= 128 for r in rows)
    # each item lies in one tile (its box is trimmed to the mapped pixels: no crop ran on glass)
    assert all(int(float(r[a])) // 128 == (int(float(r[a])) + int(float(r[b])) - 1) // 128
               for r in rows for a, b in (("y", "h"), ("x", "w")))
    # an item never covers more than its box: area <= h * w level-0 px at 0.5 um/px
    assert all(float(r["area_mm2"]) <= float(r["h"]) * float(r["w"]) * 0.25e-6 * 1.0001
               for r in rows)
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    gj = json.loads((out / "queue.geojson").read_text())
    feat = gj["features"][0]
    meas = feat["properties"]["measurements"]
    assert set(meas) >= {"p_tumor", "p_stroma", "p_normal", "p_background", "uncertainty"}
    assert meas["uncertainty"] == pytest.approx(scores[0], abs=1e-3)
    # the outline's bounding box is the item's level-0 box (the box bounds its pixels)
    pts = np.array([p for poly in feat["geometry"]["coordinates"] for ring in poly
                    for p in ring])
    r = rows[0]
    assert (pts[:, 0].min(), pts[:, 1].min()) == (float(r["x"]), float(r["y"]))
    assert (pts[:, 0].max(), pts[:, 1].max()) == (float(r["x"]) + float(r["w"]),
                                                  float(r["y"]) + float(r["h"]))
    assert main(["uncertainty", str(a.path), "--out", str(tmp_path / "qg"), "--mode", "tile",
                 "--tile", "64", "--min-area", "0", "--score", "expected_gain"]) == 0
    gains = [float(r["score"]) for r in csv.DictReader(open(tmp_path / "qg" / "queue.csv"))]
    assert len(gains) == len(rows) and gains == sorted(gains, reverse=True)
    meas = json.loads((tmp_path / "qg" / "queue.geojson").read_text())["features"][0][
        "properties"]["measurements"]
    assert meas["expected_gain"] == pytest.approx(gains[0], abs=1e-3)
    import zarr

    g = zarr.open_group(str(out / "uncertainty.zarr"), mode="r")
    assert g["uncertainty"].shape == a.cams.shape[1:]
    assert g.attrs["geometry"]["downsample"] == a.downsample
    assert (out / "uncertainty.png").is_file()

    # bad input: one clear line each
    capsys.readouterr()
    assert main(["uncertainty", str(tmp_path / "missing.zarr"), "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip().endswith("no CAM store at "
                                                    f"'{tmp_path / 'missing.zarr'}' "
                                                    "(make one with 'wsss-napari cam')")
    assert main(["uncertainty", str(paths["b"].path), "--out", str(tmp_path / "q2"),
                 "--metric", "disagreement"]) == 2
    assert "--keep-scales" in capsys.readouterr().err
    assert main(["uncertainty", str(paths["b"].path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "built on the maps of another slide (a.tif), not b.tif" in err
    assert len(err.strip().splitlines()) == 1


def test_uncertainty_params_validate_and_round_trip():
    p = UncertaintyParams(metric="margin", mode="tile", tile=64)
    assert p.metric is UncertaintyMetric.MARGIN and p.mode is QueueMode.TILE
    assert UncertaintyParams.from_dict(p.to_dict()) == p
    assert UncertaintyParams().metric is UncertaintyMetric.ENTROPY
    assert UncertaintyParams(score="expected_gain").score is QueueScore.EXPECTED_GAIN
    with pytest.raises(WsssError, match="score must be one of"):
        UncertaintyParams(score="variance")
    with pytest.raises(WsssError, match="metric must be one of"):
        UncertaintyParams(metric="variance")
    with pytest.raises(WsssError, match="threshold"):
        UncertaintyParams(threshold=1.5)
