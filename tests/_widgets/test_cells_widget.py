"""The Cells widget: per-cell classes from the CAM widget's maps as an aligned Points layer."""

from __future__ import annotations

import numpy as np
import pytest

from wsss_napari.classes import PALETTE

pytestmark = pytest.mark.gui


def test_cells_widget_adds_points_coloured_by_class(qtbot, viewer, small_slide,
                                                    tiny_model_path, notifications,
                                                    whole_slide_cams):
    slide_layer, cam = whole_slide_cams(small_slide, tiny_model_path)

    _, cells = viewer.window.add_plugin_dock_widget("wsss-napari", "Cells")
    cells.region_mode = "Whole slide"
    cells.use_labels.setChecked(True)
    bad = viewer.add_labels(np.zeros((100, 100), np.int32), name="nuclei")
    cells.labels_combo.layer = bad
    assert cells.run() is not None
    # a job that fails at once may finish before a waitSignal could connect: poll instead
    qtbot.waitUntil(lambda: not cells.runner.running, timeout=60_000)
    assert any("do not match the slide" in m for m in notifications)
    assert "Cells" not in viewer.layers

    cells.use_labels.setChecked(False)
    assert cells.run() is not None
    qtbot.waitUntil(lambda: not cells.runner.running, timeout=120_000)
    points = viewer.layers["Cells"]
    table = cells.last_cells
    assert len(points.data) == len(table) > 10
    k = int(np.argmax(table.confidence))
    world = points.data_to_world(points.data[k])
    data = np.asarray(slide_layer.world_to_data(world))[-2:]
    np.testing.assert_allclose(data + 0.5, [table.centroid_y[k], table.centroid_x[k]],
                               atol=1e-6)  # the point sits on the nucleus' level-0 centroid
    np.testing.assert_allclose(points.face_color[k][:3],
                               np.asarray(PALETTE[table.label[k]]) / 255.0, atol=1e-6)
    assert set(points.features["class"]) <= {"tumor", "stroma", "normal"}
