"""The Stain normalisation widget: a normalised layer beside the slide, one estimate."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gui


def test_stain_widget_adds_the_normalised_slide_beside_the_original(qtbot, viewer,
                                                                     small_slide,
                                                                     notifications):
    (slide_layer,) = viewer.open(str(small_slide), plugin="wsss-napari")
    _, widget = viewer.window.add_plugin_dock_widget("wsss-napari", "Stain normalisation")
    widget.image_combo.layer = slide_layer
    assert widget.run() is None  # no target yet: a message, no job
    assert any("draw the target region" in m for m in notifications)

    level0 = np.asarray(slide_layer.data[0] if slide_layer.multiscale else slide_layer.data)
    grey = level0[..., :3].mean(axis=-1)
    ys, xs = np.nonzero(grey < 200)  # some tissue for the target region
    y, x = int(np.median(ys)), int(np.median(xs))
    box = np.array([[y - 100, x - 100], [y - 100, x + 100], [y + 100, x + 100],
                    [y + 100, x - 100]], float) * np.asarray(slide_layer.scale)[-2:]
    viewer.add_shapes([box], shape_type="rectangle", name="target")
    widget.shapes_combo.layer = viewer.layers["target"]
    widget.method = "reinhard"
    assert widget.run() is not None
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=60_000)
    name = f"{slide_layer.name} (reinhard)"
    layer = viewer.layers[name]
    assert layer.multiscale == slide_layer.multiscale
    np.testing.assert_allclose(layer.scale, slide_layer.scale)
    np.testing.assert_allclose(layer.translate, slide_layer.translate)
    data = layer.data[0] if layer.multiscale else layer.data
    crop = np.asarray(data[300:364, 200:296])
    np.testing.assert_array_equal(crop, widget.normalizer(level0[300:364, 200:296]))
    assert not np.array_equal(crop, level0[300:364, 200:296, :3])
