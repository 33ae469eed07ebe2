"""napari's reader choice for slide files: the problem, and the preference that fixes it."""

from __future__ import annotations

import shutil

import pytest

pytestmark = pytest.mark.gui


@pytest.fixture
def settings(monkeypatch):
    """napari's settings, not saved to the user's settings file during the test."""
    from napari.settings import get_settings

    s = get_settings()
    monkeypatch.setattr(type(s), "_maybe_save", lambda self: None)
    before = dict(s.plugins.extension2reader)
    yield s
    s.plugins.extension2reader = before


@pytest.fixture
def svs(tmp_path, small_slide):
    path = tmp_path / "slide.svs"
    shutil.copy(small_slide, path)
    return path


def test_without_a_preference_napari_has_two_readers_for_svs(viewer, settings, svs):
    from napari.errors import MultipleReaderError

    settings.plugins.extension2reader = {}
    with pytest.raises(MultipleReaderError):
        viewer.open(str(svs), plugin=None)  # what File > Open and drag and drop do


def test_after_the_preference_open_without_plugin_uses_ours_every_time(viewer, settings, svs):
    from wsss_napari._widgets._readerpref import prefer_wsss

    settings.plugins.extension2reader = {"*.tiff": "napari"}  # the user's own choice stays
    assert prefer_wsss() == ["*.svs", "*.tif"]
    assert settings.plugins.extension2reader == {
        "*.tiff": "napari", "*.svs": "wsss-napari", "*.tif": "wsss-napari"}
    for _ in range(3):
        (layer,) = viewer.open(str(svs), plugin=None)
        assert layer.source.reader_plugin == "wsss-napari"
        assert layer.multiscale and layer.scale[-1] == pytest.approx(0.5)  # the file's MPP
        viewer.layers.clear()


def test_reading_a_slide_offers_the_preference_once_and_only_the_action_sets_it(
        viewer, settings, svs, notifications, monkeypatch):
    from napari.utils.notifications import notification_manager

    from wsss_napari._widgets import _readerpref

    monkeypatch.setattr(_readerpref, "_OFFERED", set())
    settings.plugins.extension2reader = {}
    shown = []
    notification_manager.notification_ready.connect(shown.append)
    try:
        viewer.open(str(svs), plugin="wsss-napari")
        viewer.open(str(svs), plugin="wsss-napari")
    finally:
        notification_manager.notification_ready.disconnect(shown.append)
    offers = [n for n in shown if n.actions]
    assert len(offers) == 1 and "*.svs" in offers[0].message
    assert settings.plugins.extension2reader == {}  # nothing without the user's consent
    (_, press), = offers[0].actions
    press(None)
    assert settings.plugins.extension2reader == dict.fromkeys(
        ("*.svs", "*.tif", "*.tiff"), "wsss-napari")
