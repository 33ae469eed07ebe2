"""The napari widgets in a real viewer: manifest, CAM layers, cancel, live tuning, errors."""

from __future__ import annotations

import numpy as np
import pytest

from wsss_napari.classes import CLASS_NAMES
from wsss_napari.params import CamParams

pytestmark = pytest.mark.gui

WIDGETS = ("CAM", "Pseudo-mask tuning", "Review and fine-tune", "Export")


def _open_slide(viewer, path):
    (layer,) = viewer.open(str(path), plugin="wsss-napari")
    return layer




@pytest.mark.parametrize("name", WIDGETS)
def test_widget_opens_through_the_manifest(viewer, name):
    dock, widget = viewer.window.add_plugin_dock_widget("wsss-napari", name)
    assert dock is not None and widget is not None


def test_cam_widget_adds_one_aligned_layer_per_class(viewer, small_slide, tiny_model_path,
                                                     whole_slide_cams):
    slide_layer = _open_slide(viewer, small_slide)
    _, cam = whole_slide_cams(slide_layer, tiny_model_path)

    result = cam.last_result
    layers = [viewer.layers[f"CAM {n}"] for n in CLASS_NAMES]
    for layer in layers:
        np.testing.assert_allclose(layer.scale, np.asarray(slide_layer.scale) * result.downsample)
        expected = np.asarray(slide_layer.translate) + (
            np.asarray([result.geometry.y, result.geometry.x]) + (result.downsample - 1) / 2
        ) * np.asarray(slide_layer.scale)
        np.testing.assert_allclose(layer.translate, expected)
        assert layer.blending == "additive"
    # the maps cover the slide: their world extent matches the slide's
    slide_extent = np.asarray(slide_layer.extent.world)[1]
    cam_extent = np.asarray(layers[0].extent.world)[1]
    assert np.all(np.abs(cam_extent - slide_extent) <= result.downsample * slide_layer.scale[0])
    assert "tumor" in cam.scores_label.text()


def test_cam_widget_shows_one_scale_first_then_all_scales(qtbot, viewer, small_slide,
                                                          tiny_model_path):
    """A quick one-scale pass is on screen before the multi-scale maps replace it."""
    slide_layer = _open_slide(viewer, small_slide)
    _, cam = viewer.window.add_plugin_dock_widget("wsss-napari", "CAM")
    cam.image_combo.layer = slide_layer
    cam.model_source = str(tiny_model_path)
    cam.region_mode = "Whole slide"
    cam.params = CamParams(scales=(0.5, 1.0, 1.5))
    shown = []
    worker = cam.run()
    worker.yielded.connect(lambda item: isinstance(item, tuple) and shown.append(
        (item[1]["cam_params"].scales, "CAM tumor" in viewer.layers)))
    with qtbot.waitSignal(worker.finished, timeout=120_000):
        pass
    assert shown == [((1.0,), True)]  # the preview was added as layers
    meta = viewer.layers["CAM tumor"].metadata["wsss"]
    assert meta["cam_params"].scales == (0.5, 1.0, 1.5) and not meta.get("preview")


def test_cancel_aborts_the_cam_job(qtbot, viewer, small_slide, tiny_model_path):
    slide_layer = _open_slide(viewer, small_slide)
    _, cam = viewer.window.add_plugin_dock_widget("wsss-napari", "CAM")
    cam.image_combo.layer = slide_layer
    cam.model_source = str(tiny_model_path)
    cam.region_mode = "Whole slide"
    cam.params = CamParams(scales=(0.5, 1.0, 1.5, 2.0), tile_size=64, halo=0, skip_glass=False)
    worker = cam.run()
    with qtbot.waitSignal(worker.yielded, timeout=60_000):
        pass
    with qtbot.waitSignals([worker.aborted, worker.finished], timeout=10_000):
        cam.cancel()
    assert cam.run_button.isEnabled()
    assert "CAM tumor" not in viewer.layers


def cam_meta_out_stride(layer) -> int:
    from wsss_napari.layer_record import LayerRecord

    return LayerRecord.from_layer(layer).slide_cams.out_stride


def test_tuning_recomputes_from_the_cached_maps_only(qtbot, viewer, small_slide, tiny_model_path,
                                                      whole_slide_cams):
    slide_layer = _open_slide(viewer, small_slide)
    _, cam = whole_slide_cams(slide_layer, tiny_model_path)
    _, tune = viewer.window.add_plugin_dock_widget("wsss-napari", "Pseudo-mask tuning")
    qtbot.waitUntil(lambda: tune.mask_layer is not None and not tune.busy, timeout=30_000)
    layer = tune.mask_layer
    array = layer.data
    before = array.copy()
    # the maps are at 1/out_stride of the model's resolution: pixel-count parameters scale
    assert tune.tuner.pixel_scale == cam_meta_out_stride(tune.cams_combo.layer) > 1

    from wsss_napari.models.fuse import inference_model

    calls = []
    model = next(iter(cam.models.values()))[0]
    # the engine runs the model's inference copy, and calls class_maps, not forward: hook
    # every layer of both
    hooks = [m.register_forward_hook(lambda *a: calls.append(1))
             for net in (model, inference_model(model)) for m in net.modules()]
    try:
        tune.suppress["stroma"].setChecked(True)  # commit: full-resolution recompute
        qtbot.waitUntil(lambda: not tune.busy and tune.params is not None
                        and tune.mask_layer.metadata["wsss"]["present"][1] is False,
                        timeout=30_000)
        tune.form.controls["bg_exponent"].setValue(0.5)
        qtbot.waitUntil(lambda: not tune.busy
                        and tune.mask_layer.metadata["wsss"]["postproc_params"].bg_exponent
                        == 0.5, timeout=30_000)
    finally:
        for hook in hooks:
            hook.remove()
    assert calls == []  # the network never ran
    assert tune.mask_layer.data is array  # updated in place
    assert not np.array_equal(before, layer.data)
    assert not (layer.data == 2).any()  # stroma (layer value class + 1) suppressed
    assert set(np.unique(layer.data)) <= {1, 2, 3, 4}  # every pixel has a class, none is 0


def test_reset_and_undo_of_the_tuning_sliders(qtbot, viewer, small_slide, tiny_model_path,
                                               whole_slide_cams):
    slide_layer = _open_slide(viewer, small_slide)
    whole_slide_cams(slide_layer, tiny_model_path)
    _, tune = viewer.window.add_plugin_dock_widget("wsss-napari", "Pseudo-mask tuning")
    qtbot.waitUntil(lambda: tune.mask_layer is not None and not tune.busy, timeout=30_000)
    start = tune.params
    assert not tune.undo_button.isEnabled()
    for name, value in (("bg_exponent", 0.5), ("min_region", 900)):
        tune.form.controls[name].setValue(value)
        tune.form.committed.emit()  # as on slider release
    assert (tune.params.bg_exponent, tune.params.min_region) == (0.5, 900)
    tune.reset()  # the model's recommendation, or the defaults: where the sliders started
    assert tune.params == start and tune.undo_button.isEnabled()
    tune.undo()
    assert (tune.params.bg_exponent, tune.params.min_region) == (0.5, 900)
    tune.undo()
    assert tune.params.bg_exponent == 0.5 and tune.params.min_region == start.min_region
    tune.undo()
    assert tune.params == start and not tune.undo_button.isEnabled()
    qtbot.waitUntil(lambda: not tune.busy and tune.mask_layer.metadata["wsss"]["postproc_params"]
                    == start, timeout=30_000)


def test_bad_file_is_one_notification_and_napari_keeps_running(viewer, tmp_path,
                                                               notifications, small_slide):
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"this is not a TIFF file")
    viewer.open(str(bad), plugin="wsss-napari")
    assert len(viewer.layers) == 0
    assert any("broken.tif" in m for m in notifications)
    _open_slide(viewer, small_slide)  # still works
    assert len(viewer.layers) == 1


def test_removing_the_slide_layer_closes_its_file(viewer, small_slide):
    layer = _open_slide(viewer, small_slide)
    slide = layer.metadata["slide"]
    assert not slide.closed
    viewer.layers.remove(layer)
    assert slide.closed


def test_fit_to_ground_truth_sets_the_sliders(qtbot, viewer, small_slide, tiny_model_path,
                                              whole_slide_cams):
    from wsss_napari.sample.synth import mask_region

    slide_layer = _open_slide(viewer, small_slide)
    whole_slide_cams(slide_layer, tiny_model_path)
    _, tune = viewer.window.add_plugin_dock_widget("wsss-napari", "Pseudo-mask tuning")
    qtbot.waitUntil(lambda: tune.mask_layer is not None and not tune.busy, timeout=30_000)
    truth = mask_region(3, 1024, 1024, 0, 0, 256, 256, ds=4)
    viewer.add_labels(truth, name="truth", scale=(2.0, 2.0), translate=(0.75, 0.75))
    tune.gt_combo.layer = viewer.layers["truth"]
    with qtbot.waitSignal(tune.fit().finished, timeout=120_000):
        pass
    assert tune.iou_label.text().startswith("mIoU")
    assert "tumor" in tune.iou_label.text()


def test_tuning_starts_from_the_models_recommended_postprocessing(qtbot, viewer, small_slide,
                                                                   tiny_model_path, tmp_path,
                                                                   whole_slide_cams):
    import shutil

    from wsss_napari.models.checkpoint import with_recommended_postproc
    from wsss_napari.params import PostprocParams

    model_path = tmp_path / "tuned.safetensors"
    shutil.copy(tiny_model_path, model_path)
    recommended = PostprocParams(bg_exponent=3.0, white_threshold=225.0, min_region=50)
    with_recommended_postproc(model_path, recommended)
    slide_layer = _open_slide(viewer, small_slide)
    _, tune = viewer.window.add_plugin_dock_widget("wsss-napari", "Pseudo-mask tuning")
    _, cam = whole_slide_cams(slide_layer, model_path)
    qtbot.waitUntil(lambda: tune.mask_layer is not None and not tune.busy, timeout=30_000)
    assert tune.params == recommended
    assert tune.mask_layer.metadata["wsss"]["postproc_params"] == recommended
    # the user's own setting survives new maps of the same model
    tune.form.controls["bg_exponent"].setValue(0.5)
    worker = cam.run()
    with qtbot.waitSignal(worker.finished, timeout=120_000):
        pass
    qtbot.waitUntil(lambda: not tune.busy, timeout=30_000)
    assert tune.params.bg_exponent == 0.5
