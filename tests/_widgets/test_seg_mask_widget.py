"""'Mask from' in the tuning widget: the default segmentation model's mask, on the CAM layers'
grid, as the same editable Pseudo-mask layer; the sliders only for the CAM path."""

from __future__ import annotations

import numpy as np
import pytest

from wsss_napari.classes import CLASS_NAMES
from wsss_napari.models import checkpoint
from wsss_napari.params import CamParams

pytestmark = pytest.mark.gui


@pytest.fixture
def defaults(tmp_path, tiny_model_path, monkeypatch):
    """The tiny CAM model and a tiny segmentation model stand in for the shipped defaults."""
    import torch

    from wsss_napari.models.config import ModelConfig
    from wsss_napari.models.registry import build_model

    torch.manual_seed(1)
    seg = tmp_path / "seg.safetensors"
    checkpoint.save_model(build_model(ModelConfig(kind="seg", arch="deeplabv3plus",
                                                  backbone="test_resnet", input_size=64,
                                                  mpp=1.0)).eval(), seg)
    monkeypatch.setattr(checkpoint, "default_model_path", lambda: tiny_model_path)
    monkeypatch.setattr(checkpoint, "default_seg_model_path", lambda: seg)
    return seg


def test_seg_mask_layer_lines_up_with_the_cam_layers(qtbot, viewer, small_slide, defaults,
                                                      whole_slide_cams):
    from wsss_napari._widgets._segmask import CAM_CHOICE, SEG_CHOICE, SLIDERS_OFF_TIP
    from wsss_napari._widgets._writer import run_record
    from wsss_napari.inference.slide_seg import slide_seg
    from wsss_napari.labels_encoding import to_layer
    from wsss_napari.layer_record import LayerRecord
    from wsss_napari.progress import run_to_end

    slide_layer, cam = whole_slide_cams(small_slide, "default")
    _, tune = viewer.window.add_plugin_dock_widget("wsss-napari", "Pseudo-mask tuning")
    qtbot.waitUntil(lambda: tune.mask_layer is not None and not tune.busy, timeout=60_000)

    assert tune.mask_from.combo.currentText() == SEG_CHOICE and tune.mask_from.active
    assert not tune.form.isEnabled() and tune.form.toolTip() == SLIDERS_OFF_TIP
    mask = tune.mask_layer
    rec = LayerRecord.from_layer(mask)
    assert rec.kind == "mask" and rec.mask_from == "seg"
    assert rec.mask_model_hash == checkpoint.file_hash(defaults)
    result = cam.last_result
    assert rec.geometry == result.geometry
    for name in CLASS_NAMES:  # same grid as every CAM layer: shape, scale, translate
        layer = viewer.layers[f"CAM {name}"]
        assert mask.data.shape == layer.data.shape[-2:]
        np.testing.assert_allclose(mask.scale, layer.scale)
        np.testing.assert_allclose(mask.translate, layer.translate)
    # the layer shows exactly the core's segmentation mask of that grid (layer encoding)
    seg_model, _ = tune.mask_from._model()
    expected = run_to_end(slide_seg(rec.slide, seg_model, result.geometry,
                                    tuple(result.cams.shape[-2:]), CamParams(device="cpu"),
                                    glass=rec.postproc_params, present=(True, True, True)))
    assert np.array_equal(mask.data, to_layer(expected))
    record = run_record(mask.metadata)  # what an export writes beside the file
    assert record.mask_from == "seg" and record.model_hash == checkpoint.file_hash(defaults)
    from wsss_napari.epithelium import epithelium_available

    prior = epithelium_available() is None
    box = tune.mask_from.epithelium  # on by default where SHELL is installed
    assert box.isChecked() and box.isEnabled() == prior
    assert record.params["cam"]["epithelium"] == (1.0 if prior else 0.0)
    if prior:  # untick: the model's own mask, and the record says so
        box.setChecked(False)
        qtbot.waitUntil(lambda: not tune.busy and LayerRecord.from_layer(
            tune.mask_layer).cam_params.epithelium == 0.0, timeout=60_000)
        own = run_to_end(slide_seg(rec.slide, seg_model, result.geometry,
                                   tuple(result.cams.shape[-2:]),
                                   CamParams(device="cpu", epithelium=0.0),
                                   glass=rec.postproc_params, present=(True, True, True)))
        assert np.array_equal(tune.mask_layer.data, to_layer(own))
        assert run_record(tune.mask_layer.metadata).params["cam"]["epithelium"] == 0.0
        box.setChecked(True)
        qtbot.waitUntil(lambda: not tune.busy, timeout=60_000)

    tune.mask_from.combo.setCurrentText(CAM_CHOICE)  # back to the CAMs and the sliders
    qtbot.waitUntil(lambda: not tune.busy and LayerRecord.from_layer(tune.mask_layer)
                    .mask_from == "cam", timeout=60_000)
    assert tune.form.isEnabled() and tune.mask_layer.data.shape == mask.data.shape
    np.testing.assert_allclose(tune.mask_layer.translate, mask.translate)
    assert run_record(tune.mask_layer.metadata).model_hash == checkpoint.file_hash(
        checkpoint.default_model_path())


def test_another_cam_model_keeps_the_cam_path(qtbot, viewer, small_slide, defaults, tmp_path,
                                              whole_slide_cams):
    """A CAM model other than the default has no segmentation model: the choice is off."""
    import shutil

    other = tmp_path / "other.safetensors"
    shutil.copy(checkpoint.default_model_path(), other)
    slide_layer, cam = whole_slide_cams(small_slide, other)
    _, tune = viewer.window.add_plugin_dock_widget("wsss-napari", "Pseudo-mask tuning")
    qtbot.waitUntil(lambda: tune.mask_layer is not None and not tune.busy, timeout=60_000)
    assert not tune.mask_from.active and tune.form.isEnabled()
    assert not tune.mask_from.combo.model().item(0).isEnabled()
    assert tune.mask_layer.metadata["wsss"]["mask_from"] == "cam"
