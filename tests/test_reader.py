"""The npe2 reader and sample data: lazy multiscale layers in micrometres, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from wsss_napari.io.reader import napari_get_reader, read_slides
from wsss_napari.io.slide import Slide, SlideError, close_layer_slide
from wsss_napari.sample import napari_samples, synth


@pytest.fixture(scope="module")
def pyramid(tmp_path_factory):
    path = tmp_path_factory.mktemp("reader") / "slide.tif"
    return synth.write_pyramidal_tiff(path, 1100, 1700, seed=9, tile=256, mpp=0.5)


@pytest.fixture
def plugins():
    """npe2 discovery of installed plugins (a Viewer triggers it; a ViewerModel does not)."""
    from npe2 import PluginManager

    pm = PluginManager.instance()
    if "wsss-napari" not in pm._manifests:
        pm.discover()
    if "wsss-napari" not in pm._manifests:
        pytest.skip("wsss-napari is not installed as a napari plugin (pip install -e .)")
    return pm


def test_reader_claims_slide_and_patch_files_only():
    for name in ("a.svs", "a.TIF", "a.tiff", "a.ome.tif", "a.btf", "p-[1, 0, 1].png", "x.jpg"):
        assert callable(napari_get_reader(name)), name
    for name in ("a.zarr", "notes.txt", "a.czi"):
        assert napari_get_reader(name) is None
    assert napari_get_reader(["a.svs", "b.txt"]) is None


def test_layer_data_is_lazy_multiscale_in_micrometres(pyramid):
    [(data, kwargs, kind)] = napari_get_reader(str(pyramid))(str(pyramid))
    assert kind == "image" and kwargs["multiscale"] and kwargs["rgb"]
    assert [tuple(d.shape) for d in data[:2]] == [(1100, 1700, 3), (550, 850, 3)]
    assert not any(isinstance(d, np.ndarray) for d in data)  # nothing decoded up front
    assert kwargs["scale"] == (0.5, 0.5) and kwargs["units"] == ("um", "um")
    meta = kwargs["metadata"]
    assert isinstance(meta["slide"], Slide) and meta["mpp"] == 0.5
    assert meta["mpp_source"] == "tiff-resolution" and meta["path"] == str(pyramid)
    close_layer_slide(meta)
    assert meta["slide"].closed


def test_unknown_mpp_is_shown_in_pixels(tmp_path):
    path = tmp_path / "nompp.tif"
    tifffile.imwrite(path, np.zeros((64, 96, 3), np.uint8), photometric="rgb", metadata=None)
    [(data, kwargs, _)] = read_slides(str(path))
    assert kwargs["scale"] == (1.0, 1.0) and "units" not in kwargs
    assert kwargs["metadata"]["mpp"] is None and kwargs["metadata"]["mpp_source"] == "unknown"
    assert not kwargs["multiscale"] and data.shape == (64, 96, 3)
    kwargs["metadata"]["slide"].close()


def test_reader_error_closes_what_it_opened(pyramid, tmp_path):
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"II*\x00garbage")
    with pytest.raises(SlideError, match="bad.tif"):
        read_slides([str(pyramid), str(bad)])


def test_viewer_model_opens_through_the_manifest(pyramid, plugins, tmp_path):
    from napari.components import ViewerModel

    viewer = ViewerModel()
    [layer] = viewer.open(str(pyramid), plugin="wsss-napari")
    assert layer.multiscale and layer.rgb
    assert tuple(layer.scale) == (0.5, 0.5)
    assert str(layer.units[0]) == "micrometer"
    assert layer.metadata["slide"].shape == (1100, 1700)
    bad = tmp_path / "zero.tif"
    bad.write_bytes(b"")
    from napari.utils.notifications import notification_manager

    seen = len(notification_manager.records)
    try:  # the napari-side wrapper turns the error into a notification; the core raises it
        viewer.open(str(bad), plugin="wsss-napari")
        message = " ".join(str(n.message) for n in notification_manager.records[seen:])
    except Exception as err:  # noqa: BLE001
        message = str(err)
    assert "zero.tif" in message and "empty" in message
    assert len(viewer.layers) == 1  # the viewer is unharmed
    close_layer_slide(layer.metadata)


def test_sample_data(tmp_path, monkeypatch):
    monkeypatch.setenv("WSSS_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(napari_samples, "SAMPLE_SIZE", (1024, 1536))
    image, truth = napari_samples.synthetic_slide()
    assert image[2] == "image" and image[1]["scale"] == (0.5, 0.5)
    assert napari_samples.sample_slide_path((1024, 1536)).exists()
    mask = truth[0]
    assert truth[2] == "labels" and mask.shape == (256, 384)
    assert set(np.unique(mask)) <= {1, 2, 3, 4}  # layer encoding: class + 1, 0 = nothing
    assert truth[1]["metadata"]["wsss"]["label_encoding"] == "class+1"
    assert truth[1]["scale"] == (2.0, 2.0)
    image[1]["metadata"]["slide"].close()
    [(ihc, kw, kind)] = napari_samples.immunohistochemistry()
    assert ihc.shape == (512, 512, 3) and kind == "image" and kw["rgb"]


@pytest.mark.gui
def test_real_viewer_opens_a_pyramidal_slide(make_napari_viewer, pyramid):
    viewer = make_napari_viewer(show=True)  # an unshown canvas renders black under Xvfb
    [layer] = viewer.open(str(pyramid), plugin="wsss-napari")
    assert layer.multiscale and tuple(layer.scale) == (0.5, 0.5)
    viewer.reset_view()
    shot = viewer.screenshot(canvas_only=True, flash=False)
    assert shot.shape[-1] == 4 and shot[..., :3].std() > 5  # tissue was rendered
    slide = layer.metadata["slide"]
    viewer.layers.remove(layer)
    close_layer_slide(layer.metadata)
    assert slide.closed
