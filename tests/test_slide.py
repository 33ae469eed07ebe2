"""Slide: lazy levels, mpp sources, conversions, clear errors on broken files, no fd leaks."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from wsss_napari import WsssError
from wsss_napari.io import slide as slide_mod
from wsss_napari.io.slide import LazyDownsampled, Slide, SlideError, close_layer_slide
from wsss_napari.progress import run_to_end
from wsss_napari.sample import synth


@pytest.fixture(scope="module")
def pyramid(tmp_path_factory):
    path = tmp_path_factory.mktemp("slides") / "pyr.tif"
    return synth.write_pyramidal_tiff(path, 1300, 2000, seed=1, tile=256, mpp=0.5)


def _rgb(h=300, w=400, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


# ------------------------------------------------------------------------- pyramids, mpp


def test_pyramidal_tiff_opens_lazily_with_levels_and_mpp(pyramid):
    with Slide.open(pyramid) as s:
        assert s.shape == (1300, 2000)
        shapes = [tuple(lv.shape) for lv in s.levels[:3]]
        assert shapes == [(1300, 2000, 3), (650, 1000, 3), (325, 500, 3)]
        assert s.downsamples[:3] == pytest.approx([1, 2, 4])
        assert (s.mpp, s.mpp_source) == (0.5, "tiff-resolution")
        assert not isinstance(s.levels[0], np.ndarray)  # a zarr view, not decoded pixels
        assert s.level_for_downsample(3.0) == 1 and s.level_for_downsample(0.5) == 0
        region = s.read_region(0, 1250, 1950, 100, 100)  # half outside: white there
        assert region.shape == (100, 100, 3) and (region[60:, :] == 255).all()
        truth, _ = synth.render_region(1, 1300, 2000, 100, 200, 64, 64)
        assert np.abs(s.read_region(0, 100, 200, 64, 64).astype(int) - truth).mean() < 6
        thumb = s.thumbnail(256)
        assert thumb.shape == (166, 256, 3) and thumb.dtype == np.uint8
        info = s.info()
        assert info["tile_size"] == [256, 256] and info["compression"] == "jpeg"


@pytest.mark.parametrize(
    ("kwargs", "mpp", "source"),
    [
        ({"resolution": (25400 / 0.25,) * 2, "resolutionunit": "INCH"}, 0.25, "tiff-resolution"),
        ({"resolution": (72, 72), "resolutionunit": "INCH"}, None, "unknown"),  # not a scan
        ({}, None, "unknown"),
        ({"description": "Aperio Image Library v12\r\n400x300 JPEG|AppMag = 40|MPP = 0.2520"},
         0.252, "aperio"),
    ],
    ids=["inch", "72dpi", "none", "aperio"],
)
def test_mpp_from_tiff_metadata(tmp_path, kwargs, mpp, source):
    path = tmp_path / "m.tif"
    tifffile.imwrite(path, _rgb(), photometric="rgb", tile=(128, 128), metadata=None, **kwargs)
    with Slide.open(path) as s:
        assert s.mpp == (pytest.approx(mpp) if mpp else None)
        assert s.mpp_source == source


@pytest.mark.parametrize(("size", "unit", "mpp"), [(0.25, "µm", 0.25), (500, "nm", 0.5)])
def test_mpp_from_ome(tmp_path, size, unit, mpp):
    path = tmp_path / "m.ome.tif"
    tifffile.imwrite(path, _rgb(), photometric="rgb", ome=True,
                     metadata={"axes": "YXS", "PhysicalSizeX": size, "PhysicalSizeXUnit": unit,
                               "PhysicalSizeY": size, "PhysicalSizeYUnit": unit})
    with Slide.open(path) as s:
        assert s.format == "ome-tiff"
        assert s.mpp == pytest.approx(mpp) and s.mpp_source == "ome"


def test_large_single_level_tiff_gets_a_lazy_pyramid_and_a_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(slide_mod, "LAZY_PYRAMID_MIN", 1000)
    rgb, _ = synth.make_tissue(1500, 2300, seed=4)
    path = tmp_path / "stripped.tif"
    tifffile.imwrite(path, rgb, photometric="rgb", rowsperstrip=64, compression="zlib")
    with Slide.open(path) as s:
        assert s.lazy_pyramid and s.details["stripped"]
        assert [tuple(lv.shape[:2]) for lv in s.levels] == [(1500, 2300), (750, 1150), (375, 575)]
        lv1 = s.levels[1]
        assert isinstance(lv1, LazyDownsampled)
        import cv2

        expect = cv2.resize(rgb, (1150, 750), interpolation=cv2.INTER_AREA)
        got = s.read_region(1, 0, 0, 750, 1150)
        assert np.abs(got.astype(int) - expect).max() <= 1
        assert np.array_equal(lv1[100:700:3, 5], got[100:700:3, 5])  # numpy-style indexing
        cache = run_to_end(s.build_pyramid_cache())
    assert cache.name == "stripped.tif.wsss-pyramid.tif"
    with Slide.open(path) as s2:
        assert not s2.lazy_pyramid and s2.details["pyramid_cache"] == str(cache)
        assert s2.path == path and len(s2.levels) == 3
        assert np.abs(s2.read_region(0, 0, 0, 300, 300).astype(int) - rgb[:300, :300]).mean() < 4


# ------------------------------------------------------------------------- conversions


@pytest.mark.parametrize(
    ("make", "check"),
    [
        (lambda: (_rgb().astype(np.uint16) * 200, "YXS"), "scaled"),
        (lambda: (_rgb()[..., 0], "YX"), "grey"),
        (lambda: (np.dstack([_rgb(), np.full((300, 400), 7, np.uint8)]), "YXS"), "rgba"),
        (lambda: (_rgb().astype(np.float32) / 255, "YXS"), "float"),
    ],
    ids=["uint16", "grey", "rgba", "float01"],
)
def test_supported_layouts_become_rgb8(tmp_path, make, check):
    arr, axes = make()
    path = tmp_path / "c.tif"
    kw = {"photometric": "rgb", "extrasamples": ["unassalpha"]} if arr.shape[-1] == 4 else {}
    if axes == "YX":
        kw = {"photometric": "minisblack"}
    elif arr.shape[-1] == 3:
        kw = {"photometric": "rgb"}
    tifffile.imwrite(path, arr, tile=(64, 64), **kw)
    with Slide.open(path) as s:
        out = s.read_region(0, 0, 0, 300, 400)
    assert out.dtype == np.uint8 and out.shape == (300, 400, 3)
    src = _rgb()
    if check == "grey":
        assert np.array_equal(out[..., 0], src[..., 0]) and np.array_equal(out[..., 2], src[..., 0])
    elif check == "rgba":  # alpha 7 of 255: composited onto white (glass), as everywhere
        expect = np.floor((src.astype(np.float64) * 7 + 255 * 248) / 255 + 0.5)
        assert np.abs(out.astype(np.float64) - expect).max() <= 1
    else:  # rescaled: same ordering, full range used
        assert np.corrcoef(out[..., 1].ravel(), src[..., 1].ravel())[0, 1] > 0.99
        assert out.max() >= 250 and out.min() <= 5


@pytest.mark.parametrize(
    ("arr", "kw", "words"),
    [
        (np.zeros((5, 64, 64), np.uint8), {"photometric": "minisblack", "planarconfig": "separate"},
         "5 channels"),
        (np.zeros((64, 64), np.complex64), {}, "pixel type"),
        (np.full((64, 64, 3), 1e6, np.float32), {"photometric": "rgb"}, "float image"),
        (np.zeros((3, 64, 64, 3), np.uint8), {"photometric": "rgb", "metadata": {"axes": "ZYXS"}},
         "stack"),
    ],
    ids=["5-channel", "complex", "float-range", "z-stack"],
)
def test_unsupported_layouts_are_refused_clearly(tmp_path, arr, kw, words):
    path = tmp_path / "bad.tif"
    tifffile.imwrite(path, arr, **kw)
    with pytest.raises(SlideError, match=words) as err:
        Slide.open(path)
    assert "bad.tif" in str(err.value)


# ------------------------------------------------------------------------- broken files


def test_broken_files_give_one_clear_error(tmp_path, pyramid):
    empty = tmp_path / "empty.svs"
    empty.write_bytes(b"")
    text = tmp_path / "notes.tif"
    text.write_text("this is not a tiff at all\n" * 10)
    data = pyramid.read_bytes()
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(data[: len(data) // 2])
    cases = {empty: "empty", text: "not a TIFF", truncated: "truncated|damaged",
             tmp_path / "missing.tif": "does not exist", tmp_path: "folder"}
    for path, words in cases.items():
        with pytest.raises(SlideError, match=words) as err:
            Slide.open(path)
        assert str(path) in str(err.value)
        assert isinstance(err.value, WsssError)


def test_missing_codec_names_imagecodecs(tmp_path):
    path = tmp_path / "codec.tif"
    tifffile.imwrite(path, _rgb(), photometric="rgb", tile=(128, 128), compression="jpeg")
    with tifffile.TiffFile(path, mode="r+") as tf:
        tf.pages[0].tags["Compression"].overwrite(50123)  # a compression no codec knows
    with pytest.raises(SlideError, match="imagecodecs") as err:
        Slide.open(path)
    assert "codec.tif" in str(err.value)


def test_png_and_jpeg_patches_open_in_memory(tmp_path):
    from PIL import Image

    rgb = _rgb(224, 224)
    Image.fromarray(rgb).save(tmp_path / "p-[1, 0, 0].png")
    Image.fromarray(rgb).save(tmp_path / "p.jpg", quality=95)
    with Slide.open(tmp_path / "p-[1, 0, 0].png") as s:
        assert len(s.levels) == 1 and np.array_equal(s.levels[0], rgb) and s.mpp is None
    with Slide.open(tmp_path / "p.jpg") as s:
        assert s.levels[0].shape == (224, 224, 3) and s.format == "jpeg"
    broken = tmp_path / "broken.png"
    broken.write_bytes((tmp_path / "p-[1, 0, 0].png").read_bytes()[:300])
    with pytest.raises(SlideError, match="broken.png"):
        Slide.open(broken)


def test_from_arrays_converts_and_keeps_user_mpp():
    grey = np.arange(64 * 80, dtype=np.uint16).reshape(64, 80)
    s = Slide.from_arrays([grey], mpp=0.25, name="arr")
    assert s.mpp_source == "user" and s.shape == (64, 80)
    out = s.read_region(0, 0, 0, 64, 80)
    assert out.dtype == np.uint8 and out[0, 0, 0] < out[-1, -1, 0]
    with pytest.raises(SlideError, match="channels"):
        Slide.from_arrays(np.zeros((8, 8, 2), np.uint8))


def test_closed_slide_refuses_reads_and_layer_helper_closes(pyramid):
    s = Slide.open(pyramid)
    close_layer_slide({"slide": s, "mpp": 0.5})
    assert s.closed
    with pytest.raises(SlideError, match="closed"):
        s.read_region(0, 0, 0, 4, 4)
    close_layer_slide({})  # layers without a slide: nothing to do
    s.close()  # idempotent


def test_no_file_handle_leak_after_100_slides(pyramid, tmp_path):
    psutil = pytest.importorskip("psutil")
    proc = psutil.Process()
    bad = tmp_path / "bad.tif"
    bad.write_text("nope")
    for _ in range(3):  # warm up imports and caches
        Slide.open(pyramid).close()
    before = proc.num_fds()
    for i in range(100):
        s = Slide.open(pyramid)
        s.read_region(len(s.levels) - 1, 0, 0, 32, 32)
        s.close()
        if i % 10 == 0:
            with pytest.raises(SlideError):
                Slide.open(bad)
    assert proc.num_fds() <= before


# ------------------------------------------------------------------------- real slides


def test_shared_svs_jpeg(shared_slides):
    with Slide.open(shared_slides / "CMU-1-Small-Region.svs") as s:
        assert s.shape == (2967, 2220) and s.format == "svs"
        assert s.mpp == pytest.approx(0.499) and s.mpp_source == "aperio"
        assert "thumbnail" in s.details["associated"] and "label" in s.details["associated"]
        assert s.read_region(0, 1000, 1000, 256, 256).std() > 5  # real tissue, decoded
        assert s.thumbnail(512).shape[0] == 512


def test_shared_svs_jpeg2000_two_levels(shared_slides):
    with Slide.open(shared_slides / "tcga-cr-7395-01a-01-ts1.svs") as s:
        assert s.shape == (3567, 4443) and len(s.levels) == 2
        assert s.details["compression"].startswith("aperio_jp2000")
        assert s.mpp is None and s.mpp_source == "unknown"  # the file does not say
        assert s.read_region(1, 800, 1000, 128, 128).shape == (128, 128, 3)
