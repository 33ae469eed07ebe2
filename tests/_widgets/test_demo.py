"""The demo and the real H&E sample: napari sample data with its MPP, docks laid out so the
tuning sliders are visible, maps and tissue map computed on the real slide."""

from __future__ import annotations

import numpy as np
import pytest

from wsss_napari.sample.napari_samples import REAL_SAMPLE

pytestmark = pytest.mark.gui


def test_real_he_sample_opens_lazily_with_its_mpp(viewer):
    (layer,) = viewer.open_sample("wsss-napari", "real_he")
    assert layer.multiscale and layer.rgb
    assert tuple(layer.data[0].shape) == (2560, 1760, 3)
    np.testing.assert_allclose(layer.scale, (0.499, 0.499))
    assert layer.metadata["mpp_source"] == "tiff-resolution"
    # real H&E, not glass: the crop's mean colour is pink-purple (red > green)
    thumb = np.asarray(layer.data[-1])
    assert thumb[..., 0].mean() > thumb[..., 1].mean() + 20


def test_demo_opens_the_real_slide_with_the_tuning_sliders_in_view(qtbot, make_napari_viewer,
                                                                  tiny_model_path):
    from wsss_napari.cli._demo import default_slide, open_demo

    assert default_slide(synthetic=False, size=512) == REAL_SAMPLE
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(1600, 1000)
    widgets = open_demo(viewer, REAL_SAMPLE, str(tiny_model_path))
    cam, tune = widgets["CAM"], widgets["Pseudo-mask tuning"]
    qtbot.waitUntil(lambda: tune.mask_layer is not None and not cam.busy and not tune.busy,
                    timeout=120_000)
    assert viewer.layers[0].name == REAL_SAMPLE.name
    assert any(lyr.name == "CAM tumor" for lyr in viewer.layers)

    docks = {n: getattr(w, "native", w).parent()  # the dock around each widget
             for n, w in viewer.window.dock_widgets.items()}
    def shown(name):  # noqa: E306
        dock = next(d for n, d in docks.items() if n.startswith(name))
        return not dock.visibleRegion().isEmpty()
    assert shown("Pseudo-mask tuning") and shown("CAM") and shown("Review and fine-tune")
    assert not shown("Export")  # a tab behind "Review and fine-tune"
    assert viewer.window._qt_window.height() <= 1000  # all of it fits a 1000 px high screen
