"""Whole-slide CAMs on a generated pyramidal TIFF: glass skipped, resumable, cached, regions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wsss_napari import WsssError
from wsss_napari.inference.slide_cam import COMPUTED, GLASS, SlideCams, slide_cams
from wsss_napari.inference.tissue import tissue_mask
from wsss_napari.models.config import ModelConfig
from wsss_napari.models.registry import build_model
from wsss_napari.params import CamParams
from wsss_napari.progress import run_to_end
from wsss_napari.region import Region

torch.set_num_threads(1)

#: model at 1.0 um/px on a 0.5 um/px slide: level 1 is read; 128 px tiles = 256 level-0 px
PARAMS = CamParams(device="cpu", scales=(1.0,), tile_size=128, halo=16, batch_size=32)


@pytest.fixture(scope="module")
def slide_path(tmp_path_factory):
    from wsss_napari.sample.synth import write_pyramidal_tiff

    return write_pyramidal_tiff(tmp_path_factory.mktemp("slide") / "s.tif", 1024, 1536, seed=7,
                                mpp=0.5)


@pytest.fixture
def slide(slide_path):
    from wsss_napari.io.slide import Slide

    with Slide.open(slide_path) as s:
        yield s


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(ModelConfig(backbone="test_resnet", input_size=64, mpp=1.0)).eval()


def test_whole_slide_skips_glass(model, tmp_path):
    """Tiles that no tissue-holding crop reaches are glass (not computed)."""
    from wsss_napari.io.slide import Slide
    from wsss_napari.sample.synth import make_tissue

    rgb, _ = make_tissue(1024, 1536, seed=7)
    rgb[:, 900:] = 255  # glass on the right: the crops of the last tile column see none
    slide = Slide.from_arrays([rgb, np.ascontiguousarray(rgb[::2, ::2])], mpp=0.5)
    res = run_to_end(slide_cams(slide, model, PARAMS, cache_dir=tmp_path))
    assert (res.done[:, 5] == GLASS).all() and (res.done[:, :4] == COMPUTED).all()
    assert isinstance(res, SlideCams) and res.level == 1 and not res.warnings
    assert res.done.shape == (4, 6) and set(np.unique(res.done)) <= {COMPUTED, GLASS}
    assert (res.done == GLASS).any() and (res.done == COMPUTED).any()
    assert res.raw.shape == (3, 1024 // 8, 1536 // 8) and res.downsample == 8.0
    assert (res.geometry.y, res.geometry.x, res.geometry.mpp) == (0, 0, 0.5)
    cams = np.asarray(res.cams)
    assert cams.dtype == np.float32 and cams.min() >= 0 and cams.max() == pytest.approx(1.0)
    # glass tiles hold no CAM; the tissue mask of those tiles is (nearly) empty
    mask = tissue_mask(slide.thumbnail(1536))
    fy = mask.shape[0] / 1024
    for ty, tx in zip(*np.nonzero(res.done == GLASS), strict=True):
        assert not cams[:, ty * 32:(ty + 1) * 32, tx * 32:(tx + 1) * 32].any()
        box = mask[int(ty * 256 * fy):int((ty + 1) * 256 * fy),
                   int(tx * 256 * fy):int((tx + 1) * 256 * fy)]
        assert box.mean() < 0.05
    assert res.scores.shape == (3,)
    reopened = SlideCams.open(res.path)
    np.testing.assert_array_equal(np.asarray(reopened.cams), cams)


def test_resume_after_interruption_and_cache_reuse(slide, model, tmp_path):
    gen = slide_cams(slide, model, PARAMS, cache_dir=tmp_path / "a")
    first = next(gen)
    n_total, n_glass = first.total, first.info["glass"]
    for p in gen:  # stop once two tiles are finished
        if p.info.get("computed") == 2 and "crops" not in p.info:
            break
    gen.close()  # the consumer cancels: the pool and the store are cleaned up
    gen = slide_cams(slide, model, PARAMS, cache_dir=tmp_path / "a")
    progress = []
    try:
        while True:
            progress.append(next(gen))
    except StopIteration as stop:
        resumed = stop.value
    assert progress[0].done == n_glass + 2
    assert progress[-1].info["computed"] == n_total - n_glass - 2
    fresh = run_to_end(slide_cams(slide, model, PARAMS, cache_dir=tmp_path / "b"))
    np.testing.assert_allclose(np.asarray(resumed.cams), np.asarray(fresh.cams), atol=1e-6)
    np.testing.assert_allclose(resumed.scores, fresh.scores, atol=1e-6)
    # the same request again: everything comes from the cache
    again = list(slide_cams(slide, model, PARAMS, cache_dir=tmp_path / "a"))
    assert len(again) == 1 and again[0].done == again[0].total
    # another parameter -> another store
    other = run_to_end(slide_cams(slide, model, PARAMS.replace(flip=True),
                                  cache_dir=tmp_path / "a"))
    assert other.path != resumed.path


def test_region_and_explicit_out(slide, model, tmp_path):
    region = Region(y=256, x=512, height=300, width=500)
    out = tmp_path / "roi.zarr"
    res = run_to_end(slide_cams(slide, model, PARAMS, region=region, out=out))
    assert res.path == out and (res.geometry.y, res.geometry.x) == (256, 512)
    assert res.region == region and SlideCams.open(out).geometry == res.geometry
    assert res.geometry.slide == str(slide.path.resolve())
    assert res.raw.shape == (3, -(-300 // 8), -(-500 // 8))
    # the maps' pixel size in model pixels, kept for the post-processing's pixel_scale
    assert res.out_stride == PARAMS.out_stride == SlideCams.open(out).out_stride
    with pytest.raises(WsssError, match="another slide, model, region"):
        run_to_end(slide_cams(slide, model, PARAMS, region=Region(y=0, x=0, height=300,
                                                                   width=500), out=out))
    with pytest.raises(WsssError, match="outside the slide"):
        run_to_end(slide_cams(slide, model, PARAMS, region=Region(y=5000, x=0, height=10,
                                                                   width=10), out=out))
    with pytest.raises(WsssError, match="must be a wsss_napari.region.Region"):
        run_to_end(slide_cams(slide, model, PARAMS, region=(256, 512, 300, 500), out=out))


def test_format_1_stores_still_open(slide, model, tmp_path):
    """Stores of format 1 kept ``origin: [y, x]``; they open with that origin."""
    import zarr

    out = tmp_path / "old.zarr"
    res = run_to_end(slide_cams(slide, model, PARAMS, out=out,
                                region=Region(y=256, x=512, height=256, width=512)))
    group = zarr.open_group(str(out), mode="a")
    attrs = dict(group.attrs)
    for k in ("geometry", "region", "postproc"):
        del attrs[k]
    group.attrs.clear()
    group.attrs.update({**attrs, "format": "wsss-napari-cams/1", "origin": [256, 512],
                        "downsample": 8.0, "region": [256, 512, 256, 512]})
    old = SlideCams.open(out)
    assert (old.geometry.y, old.geometry.x, old.downsample) == (256, 512, 8.0)
    assert old.region == res.region


def test_unknown_mpp_uses_level0_and_warns(model, tmp_path):
    from wsss_napari.io.slide import Slide
    from wsss_napari.sample.synth import make_tissue

    rgb, _ = make_tissue(256, 256, seed=3)
    slide = Slide.from_arrays([rgb], mpp=None)
    res = run_to_end(slide_cams(slide, model, PARAMS.replace(skip_glass=False),
                                cache_dir=tmp_path))
    assert res.level == 0 and res.downsample == PARAMS.out_stride
    assert any("unknown" in w for w in res.warnings)
    assert res.raw.shape == (3, 64, 64) and (res.done == COMPUTED).all()


def test_cli_cam(slide_path, model, tmp_path, capsys):
    from wsss_napari.cli import main
    from wsss_napari.models.checkpoint import save_model

    ckpt = tmp_path / "m.safetensors"
    save_model(model, ckpt)
    out = tmp_path / "cams.zarr"
    rc = main(["cam", str(slide_path), "--model", str(ckpt), "--out", str(out), "--scales", "1",
               "--tile-size", "256", "--region", "0", "0", "512", "512", "--device", "cpu"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "image-level scores: tumor" in text
    assert SlideCams.open(out).raw.shape == (3, 64, 64)
    assert (tmp_path / "cams.zarr.run.json").is_file()


@pytest.fixture(scope="module")
def model224(tmp_path_factory):
    """A tiny network at the default crop size (224) and the slide's resolution (level 0)."""
    from wsss_napari.models.checkpoint import save_model

    torch.manual_seed(1)
    m = build_model(ModelConfig(backbone="test_resnet", input_size=224, mpp=0.5)).eval()
    path = tmp_path_factory.mktemp("m224") / "m224.safetensors"
    save_model(m, path, half=False)
    return path


def test_tiled_cams_equal_one_piece_cams(slide_path, model224, tmp_path):
    """`cam --tile-size 256` and `--tile-size 2048` on a 768 px region, default scales: the
    halo covers every crop's reach (a 224 px crop at scale 0.5 reads 448 px) and all tiles
    share the region's crop grid, so the maps agree everywhere (they differed by 0.38)."""
    from wsss_napari.cli import main

    stores = {}
    for tile in (256, 2048):
        out = tmp_path / f"t{tile}.zarr"
        rc = main(["cam", str(slide_path), "--model", str(model224), "--out", str(out),
                   "--tile-size", str(tile), "--region", "100", "300", "768", "768",
                   "--device", "cpu"])
        assert rc == 0
        stores[tile] = SlideCams.open(out)
    small, big = stores[256], stores[2048]
    assert small.done.shape == (3, 3) and big.done.shape == (1, 1)
    assert (small.done == COMPUTED).all() and small.raw.shape == big.raw.shape == (3, 192, 192)
    a, b = np.asarray(small.cams), np.asarray(big.cams)
    assert a.max() == pytest.approx(1.0) and b.max() == pytest.approx(1.0)
    assert np.abs(a - b).max() < 0.05
    np.testing.assert_allclose(small.scores, big.scores, atol=1e-5)


def test_no_tile_steps_on_the_real_slide(shared_slides, tmp_path):
    """CMU-1, default model, a region across the tile border at y = 2048 (where a block was
    left unlabelled): 256 px tiles give the one-piece maps, with no step at the borders."""
    from wsss_napari.io.slide import Slide
    from wsss_napari.models.checkpoint import load_model

    model = load_model("default")
    params = CamParams(scales=(0.5, 1.0), tile_size=256, device="cpu")
    # The default model reads 1.0 um/px and CMU-1 is 0.499: 1024 level-0 px are 512 model px,
    # two 256 px tiles a side, whose border lies at level-0 y = 2048.
    region = Region(y=1536, x=256, height=1024, width=1024)
    with Slide.open(shared_slides / "CMU-1-Small-Region.svs") as slide:
        tiled = run_to_end(slide_cams(slide, model, params, region=region,
                                      cache_dir=tmp_path / "a"))
        whole = run_to_end(slide_cams(slide, model, params.replace(tile_size=1024),
                                      region=region, cache_dir=tmp_path / "b"))
    assert tiled.done.shape == (2, 2) and whole.done.shape == (1, 1)
    a, b = np.asarray(tiled.cams), np.asarray(whole.cams)
    assert np.abs(a - b).max() < 0.05
    # the tile border (row / column 64 of the maps at out_stride 4) is no edge of the maps
    rows = np.abs(np.diff(a, axis=1)).mean(axis=(0, 2))
    cols = np.abs(np.diff(a, axis=2)).mean(axis=(0, 1))
    assert rows[63] < 3 * np.median(rows) and cols[63] < 3 * np.median(cols)



def _skimage_tissue_mask(rgb):
    """The tissue mask as it was computed with scikit-image (before issue 14's import cut)."""
    import cv2
    from skimage.filters import threshold_otsu
    from skimage.morphology import remove_small_objects

    from wsss_napari.inference.tissue import DARK_GREY, SAT_RANGE, WHITE_GREY

    sat = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)[..., 1]
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    t = float(threshold_otsu(sat)) if sat.max() > sat.min() else float(SAT_RANGE[1])
    t = min(max(t, SAT_RANGE[0]), SAT_RANGE[1])
    mask = ((sat > t) & (grey < WHITE_GREY)) | (grey < DARK_GREY)
    mask = remove_small_objects(mask, max_size=max(4, int(mask.size * 2e-4)))
    return cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0


def test_tissue_mask_equals_the_scikit_image_version(shared_slides):
    """The tissue mask no longer imports scikit-image (a fresh process's first CAM run paid
    for it): the same Otsu threshold and speck removal, the same mask on the shared
    slides and on generated tissue."""
    from skimage.filters import threshold_otsu
    from skimage.morphology import remove_small_objects

    from wsss_napari.inference.tissue import otsu_threshold, remove_specks
    from wsss_napari.io.slide import Slide
    from wsss_napari.sample.synth import make_tissue

    rng = np.random.default_rng(0)
    for _ in range(50):
        a = rng.integers(rng.integers(0, 100), rng.integers(101, 256), (37, 53), np.uint8)
        assert otsu_threshold(a) == threshold_otsu(a)
        m = rng.random((40, 60)) < rng.random()
        for size in (1, 3, 10):
            assert np.array_equal(remove_specks(m, size), remove_small_objects(m, max_size=size))
    thumbs = [make_tissue(300, 400, seed=3)[0]]
    for path in sorted(shared_slides.glob("*.svs")):
        with Slide.open(path) as s:
            thumbs.append(s.thumbnail(1024))
    assert len(thumbs) > 1
    for thumb in thumbs:
        mask = tissue_mask(thumb)
        assert mask.mean() > 0.05
        assert np.array_equal(mask, _skimage_tissue_mask(thumb))
