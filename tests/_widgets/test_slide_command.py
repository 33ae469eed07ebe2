"""`wsss-napari slide` writes exactly the mask the tuning widget shows (same model, params)."""

from __future__ import annotations

import numpy as np
import pytest

from wsss_napari.cli import main
from wsss_napari.io.export import read_exported_mask
from wsss_napari.labels_encoding import core_labels

pytestmark = pytest.mark.gui


def test_slide_command_writes_the_mask_the_tuning_widget_shows(qtbot, viewer, small_slide,
                                                               tiny_model_path, tmp_path,
                                                               whole_slide_cams):
    slide_layer, cam = whole_slide_cams(small_slide, tiny_model_path)
    _, tune = viewer.window.add_plugin_dock_widget("wsss-napari", "Pseudo-mask tuning")
    qtbot.waitUntil(lambda: tune.mask_layer is not None and not tune.busy, timeout=30_000)
    # settings a user moved (and saved from the widget), with glass detection in play
    tune.form.controls["bg_exponent"].setValue(24.0)
    tune.form.committed.emit()
    params = tune.params
    qtbot.waitUntil(lambda: not tune.busy
                    and tune.mask_layer.metadata["wsss"]["postproc_params"] == params,
                    timeout=30_000)
    tune.save_params(str(tmp_path / "postproc.json"))
    shown = core_labels(np.array(tune.mask_layer.data), tune.mask_layer.metadata)
    assert {1, 3} <= set(np.unique(shown).tolist())  # stroma and glass/background

    out = tmp_path / "out"
    assert main(["slide", str(small_slide), "--out", str(out), "--model", str(tiny_model_path),
                 "--params", str(tmp_path / "postproc.json"), "--scales", "1"]) == 0
    mask, meta = read_exported_mask(out / "small.mask.ome.tif")
    np.testing.assert_array_equal(mask, shown)
    # and it lies where the widget's layer lies on the slide
    assert meta["geometry"] == cam.last_result.geometry
    # a cohort result opened over its slide lands exactly on the widget's layer
    from wsss_napari.slide_job import mask_layer_data

    data, kwargs, kind = mask_layer_data(out / "small.mask.ome.tif")
    opened = viewer.add_labels(data, **kwargs)
    assert kind == "labels"
    np.testing.assert_allclose(opened.scale, tune.mask_layer.scale)
    np.testing.assert_allclose(opened.translate, tune.mask_layer.translate)
    np.testing.assert_array_equal(opened.data, tune.mask_layer.data)
