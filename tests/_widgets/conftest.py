"""Fixtures of the GUI tests: a small generated pyramidal slide and a tiny CAM model."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("napari")

# timm imports triton (via torchvision and torch._dynamo); loaded after Mesa's LLVM (napari's
# OpenGL under Xvfb) it crashes unless pre-loaded as _widgets._triton does. Tests call the core
# directly, so torch is imported here first; test_triton.py checks the other order.
import timm  # noqa: E402, F401


@pytest.fixture(autouse=True)
def _isolated_caches(tmp_path_factory, monkeypatch):
    """CAM stores and sample slides go to a per-session temporary folder, not ~/.cache."""
    root = tmp_path_factory.getbasetemp() / "cache"
    monkeypatch.setenv("WSSS_CACHE_DIR", str(root))


@pytest.fixture(scope="session")
def small_slide(tmp_path_factory) -> Path:
    """A 1024 x 1024 synthetic H&E pyramidal TIFF at 0.5 um/px."""
    from wsss_napari.sample.synth import write_pyramidal_tiff

    path = tmp_path_factory.mktemp("slides") / "small.tif"
    return write_pyramidal_tiff(path, 1024, 1024, seed=3, tile=256, mpp=0.5)


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> Path:
    """A randomly initialised CAM model on timm's 'test_resnet' trained for 1 um/px."""
    import torch

    from wsss_napari.models.checkpoint import save_model
    from wsss_napari.models.config import ModelConfig
    from wsss_napari.models.registry import build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="test_resnet", input_size=64, mpp=1.0))
    path = tmp_path_factory.mktemp("models") / "tiny.safetensors"
    save_model(model.eval(), path)
    return path


@pytest.fixture
def viewer(make_napari_viewer):
    return make_napari_viewer(show=False)


@pytest.fixture
def notifications():
    """Messages of the napari notifications shown during the test."""
    from napari.utils.notifications import notification_manager

    seen: list[str] = []

    def on_notification(event):
        seen.append(str(event.message if hasattr(event, "message") else event))

    notification_manager.notification_ready.connect(on_notification)
    yield seen
    notification_manager.notification_ready.disconnect(on_notification)


@pytest.fixture
def whole_slide_cams(qtbot, viewer):
    """The common first step of the GUI tests: the CAM widget over a whole slide.

    Call it with the slide (a path to open, or a layer already in the viewer), a model (a
    path or ``"default"``) and CamParams fields (default: one scale); it returns
    ``(slide layer, CAM widget)`` once the maps are in the viewer.
    """
    from wsss_napari.params import CamParams

    def run(slide, model, scales=(1.0,), **params):
        if isinstance(slide, (str, Path)):
            (slide,) = viewer.open(str(slide), plugin="wsss-napari")
        _, cam = viewer.window.add_plugin_dock_widget("wsss-napari", "CAM")
        cam.image_combo.layer = slide
        cam.model_source = str(model)
        cam.region_mode = "Whole slide"
        cam.params = CamParams(scales=scales, **params)
        worker = cam.run()
        assert worker is not None
        with qtbot.waitSignal(worker.finished, timeout=120_000):
            pass
        return slide, cam

    return run
