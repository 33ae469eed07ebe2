"""Shown, not told: the whole review loop of a pathologist in a real napari viewer.

Open a generated slide -> CAM -> tune -> paint a correction (undo works, autosaved) ->
fine-tune a few steps -> apply and compare the new model -> export every format -> reopen
the exported files and check them against the corrected map.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from wsss_napari.classes import NORMAL, TUMOR
from wsss_napari.labels_encoding import from_layer, layer_value
from wsss_napari.layer_record import LayerRecord
from wsss_napari.params import ExportFormat, ExportParams, FinetuneParams

pytestmark = [pytest.mark.gui, pytest.mark.slow]


def test_open_cam_tune_correct_finetune_export_reopen(qtbot, viewer, small_slide,
                                                      tiny_model_path, tmp_path,
                                                      whole_slide_cams):
    from wsss_napari.corrections.store import EditStore
    from wsss_napari.io.export import geojson_to_mask, read_exported_mask, read_rle_csv

    # --- open + CAM + tune
    _, tune = viewer.window.add_plugin_dock_widget("wsss-napari", "Pseudo-mask tuning")
    _, review = viewer.window.add_plugin_dock_widget("wsss-napari", "Review and fine-tune")
    _, export = viewer.window.add_plugin_dock_widget("wsss-napari", "Export")
    slide_layer, cam = whole_slide_cams(small_slide, tiny_model_path)
    qtbot.waitUntil(lambda: tune.mask_layer is not None and not tune.busy, timeout=30_000)
    tune.params = tune.params.replace(min_region=0, min_area_pct=0.0)
    qtbot.waitUntil(lambda: not tune.busy and tune.mask_layer.metadata["wsss"][
        "postproc_params"].min_region == 0, timeout=30_000)

    # --- correct: paint two strokes, undo the second; edits are autosaved to the project
    review.project = tmp_path / "project"
    layer = review.edit_region()
    assert layer is not None and layer.data.shape == tune.mask_layer.data.shape
    records = {n: LayerRecord.from_layer(viewer.layers[n])
               for n in ("CAM tumor", "Pseudo-mask", "Correction")}
    assert {n: r.kind for n, r in records.items()} == {
        "CAM tumor": "cams", "Pseudo-mask": "mask", "Correction": "correction"}
    assert records["Pseudo-mask"].geometry == cam.last_result.geometry
    assert records["Correction"].mask_layer == "Pseudo-mask"
    layer.brush_size = 21
    assert layer.selected_label == layer_value(TUMOR)  # a real class, not napari's 0
    layer.paint((40, 40), layer_value(TUMOR))
    before_second = layer.data.copy()
    layer.paint((90, 90), layer_value(NORMAL))
    assert (layer.data[85:95, 85:95] == layer_value(NORMAL)).all()
    layer.undo()
    np.testing.assert_array_equal(layer.data, before_second)
    assert (layer.data[35:45, 35:45] == layer_value(TUMOR)).all()
    review.flush()
    store = EditStore.open(review.store.root, read_only=True)
    saved = store.read(0, 0, *layer.data.shape)
    assert (saved[35:45, 35:45] == TUMOR).all()
    assert (saved != 255).sum() > 200

    review.write_back()
    corrected = from_layer(tune.mask_layer.data)  # core labels: 0 tumor .. 3 background
    assert (corrected[35:45, 35:45] == TUMOR).all()

    # --- fine-tune a few steps in the background; the new version is saved; apply + compare
    panel = review.finetune
    panel.params = FinetuneParams(steps=3, batch_size=2, crop_size=32)
    with qtbot.waitSignal(panel.start().finished, timeout=120_000):
        pass
    assert panel.new_model_path is not None and panel.new_model_path.endswith(".safetensors")
    assert len(panel.plot.values) == 3
    with qtbot.waitSignal(panel.apply().finished, timeout=120_000):
        pass
    assert "CAM tumor (previous)" in viewer.layers and "CAM tumor" in viewer.layers
    panel.compare()
    assert viewer.layers["CAM tumor (previous)"].visible
    assert not viewer.layers["CAM tumor"].visible

    # --- export every format of the corrected map, through the widget
    mask_layer = viewer.layers["Pseudo-mask (previous)"]
    export.mask_combo.layer = mask_layer
    export.folder = tmp_path / "out"
    export.name_edit.setText("corrected")
    export.params = ExportParams(simplify=0.0)
    export.formats = tuple(ExportFormat)
    with qtbot.waitSignal(export.export().finished, timeout=60_000):
        pass
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir() if not p.name.endswith(".run.json")) == [
        "corrected.csv", "corrected.geojson", "corrected.ome.tif", "corrected.png"]

    # --- reopen and check
    labels, meta = read_exported_mask(out / "corrected.ome.tif")
    np.testing.assert_array_equal(labels, corrected)
    assert meta["geometry"] == cam.last_result.geometry
    np.testing.assert_array_equal(np.asarray(Image.open(out / "corrected.png")), corrected)
    (rle,) = read_rle_csv(out / "corrected.csv").values()
    np.testing.assert_array_equal(rle, corrected)
    geo = json.loads((out / "corrected.geojson").read_text())
    assert geo["type"] == "FeatureCollection" and geo["features"]
    raster = geojson_to_mask(geo, corrected.shape, geometry=meta["geometry"])
    fg = corrected != 3
    np.testing.assert_array_equal(raster[fg], corrected[fg])
    record = json.loads((out / "corrected.ome.tif.run.json").read_text())
    text = json.dumps(record)
    assert cam.models and "postproc" in text and "model_hash" in text

    # --- the napari writer (File > Save Selected Layers) writes the same map
    written = mask_layer.save(str(tmp_path / "saved.geojson"), plugin="wsss-napari")
    assert written and (tmp_path / "saved.geojson").exists()
