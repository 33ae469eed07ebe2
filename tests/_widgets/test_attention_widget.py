"""The Attention maps widget: opens through the manifest, adds aligned rollout layers."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gui


@pytest.fixture(scope="module")
def hybrid_model_path(tmp_path_factory):
    import torch

    from wsss_napari.models.checkpoint import save_model
    from wsss_napari.models.config import ModelConfig
    from wsss_napari.models.registry import build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="gradcam", backbone="wsss_hybrid_test", input_size=48))
    path = tmp_path_factory.mktemp("hybrid") / "hybrid.safetensors"
    save_model(model, path)
    return path


def test_attention_widget_adds_rollout_and_class_layers(qtbot, viewer, hybrid_model_path,
                                                        notifications):
    rgb = np.random.default_rng(0).integers(0, 255, (64, 96, 3), dtype=np.uint8)
    image = viewer.add_image(rgb, rgb=True, name="patch", scale=(0.5, 0.5),
                             translate=(10.0, 20.0))
    _, widget = viewer.window.add_plugin_dock_widget("wsss-napari", "Attention maps")
    widget.image_combo.layer = image
    widget.region_mode = "Whole image"
    assert widget.run() is None  # no model chosen: refused with a message
    assert any("choose a transformer" in m for m in notifications)
    widget.model_source = str(hybrid_model_path)
    assert widget.run() is not None
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=60_000)
    names = ["Attention rollout", "Attention tumor", "Attention stroma", "Attention normal"]
    for name in names:
        layer = viewer.layers[name]
        assert layer.data.shape == (64, 96)
        np.testing.assert_allclose(layer.scale, image.scale)
        np.testing.assert_allclose(layer.translate, image.translate)
        assert 0.0 <= float(layer.data.min()) and float(layer.data.max()) <= 1.0 + 1e-6
