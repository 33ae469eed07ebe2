"""Segmentation masks of slides: on the CAM maps' grid, at known pixels, tiled == one piece."""

from __future__ import annotations

import numpy as np
import pytest

from wsss_napari import WsssError
from wsss_napari.inference.slide_mask import region_rgb
from wsss_napari.inference.slide_seg import map_geometry, slide_seg
from wsss_napari.io.slide import Slide
from wsss_napari.params import CamParams, PostprocParams
from wsss_napari.progress import Progress, run_to_end
from wsss_napari.region import MaskGeometry, Region

CPU = CamParams(device="cpu", skip_glass=False)
RED, BLUE = (200, 40, 40), (40, 40, 200)


class ColourSeg:
    """A real torch segmentation model whose answer is known per pixel: a 1x1 convolution
    (red -> tumor, blue -> normal, white -> background; green -> stroma with ``green``)."""

    def __new__(cls, mpp: float = 1.0, green: bool = False):
        import torch
        from torch import nn

        from wsss_napari.models.config import ModelConfig

        class _Net(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.conv = nn.Conv2d(3, 4, 1)
                w = torch.tensor([[20.0, 0, -20], [-20.0 * green, 20.0 * green, -20.0 * green],
                                  [-20, 0, 20], [6.7, 6.7, 6.7]])
                self.conv.weight.data[:] = w[:, :, None, None]
                self.conv.bias.data[:] = torch.tensor([0.0, 0.0, 0.0, -14.0])
                self.config = ModelConfig(kind="seg", arch="deeplabv3plus", backbone="none",
                                          input_size=32, mean=(0, 0, 0), std=(1, 1, 1), mpp=mpp)
                self.source = "colour-seg"

            def normalize(self, x):
                return x.float() / 255.0

            def forward(self, x):
                return self.conv(x)

        return _Net()


def _pyramid(rgb: np.ndarray, mpp: float) -> Slide:
    import cv2

    h, w = rgb.shape[:2]
    half = cv2.resize(rgb, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    return Slide.from_arrays([rgb, half], mpp=mpp, name="generated")


@pytest.fixture(scope="module")
def painted():
    """A 400 x 480 px slide at 0.5 um/px: glass, a red block at level-0 rows 100-300 /
    cols 64-224, a blue block at rows 200-360 / cols 320-448."""
    rgb = np.full((400, 480, 3), 255, np.uint8)
    rgb[100:300, 64:224] = RED
    rgb[200:360, 320:448] = BLUE
    return rgb


def _footprint(geo: MaskGeometry, shape) -> tuple[np.ndarray, np.ndarray]:
    """Level-0 top-left and bottom-right corners of every map pixel (rows, cols)."""
    rows = geo.y + np.arange(shape[0] + 1) * geo.downsample
    cols = geo.x + np.arange(shape[1] + 1) * geo.downsample
    return rows, cols


def test_seg_mask_lands_on_the_known_pixels_of_a_pyramid(painted):
    slide = _pyramid(painted, mpp=0.5)  # model at 1.0 um/px: level 1 is read
    model = ColourSeg(mpp=1.0)
    region = Region(y=40, x=16, height=352, width=448)
    geo, shape = map_geometry(slide, model, CPU.replace(out_stride=4), region)
    assert (geo.y, geo.x, geo.downsample) == (40, 16, 8.0)  # 2 level-0 px per model px, x4
    assert shape == (44, 56)
    mask = run_to_end(slide_seg(slide, model, geo, shape, CPU))
    rows, cols = _footprint(geo, shape)
    inside = lambda a, b, lo, hi: (a >= lo) & (b <= hi)  # noqa: E731
    red = np.outer(inside(rows[:-1], rows[1:], 100, 300), inside(cols[:-1], cols[1:], 64, 224))
    blue = np.outer(inside(rows[:-1], rows[1:], 200, 360), inside(cols[:-1], cols[1:], 320, 448))
    touch = np.outer((rows[1:] > 100) & (rows[:-1] < 300), (cols[1:] > 64) & (cols[:-1] < 224))
    touch |= np.outer((rows[1:] > 200) & (rows[:-1] < 360), (cols[1:] > 320) & (cols[:-1] < 448))
    assert red.sum() > 300 and blue.sum() > 200
    assert (mask[red] == 0).all() and (mask[blue] == 2).all()
    assert (mask[~touch] == 3).all()  # glass wherever no painted pixel is under the map pixel


def test_tiled_equals_one_piece_on_generated_tissue(tmp_path):
    from wsss_napari.models.checkpoint import load_model
    from wsss_napari.params import TrainSegParams
    from wsss_napari.sample.synth import make_tissue, write_patch_dataset
    from wsss_napari.train.seg import train_segmenter

    data = write_patch_dataset(tmp_path / "patches", 16, size=64, seed=3)
    params = TrainSegParams(encoder="test_resnet", epochs=2, batch_size=8, crop_size=32,
                            val_fraction=0.0, seed=1, device="cpu")
    model = load_model(run_to_end(train_segmenter(data, data / "masks",
                                                  tmp_path / "seg.safetensors", params)))
    strip = np.concatenate([make_tissue(64, 64, seed=s)[0] for s in (2, 3, 5)], axis=1)
    rgb = np.ascontiguousarray(np.tile(strip, (3, 2, 1)))  # 192 x 384 px
    slide = Slide.from_arrays(rgb, name="tissue")
    geo, shape = map_geometry(slide, model, CPU.replace(out_stride=1))
    whole = run_to_end(slide_seg(slide, model, geo, shape, CPU.replace(tile_size=4096)))
    ticks: list[Progress] = []
    gen = slide_seg(slide, model, geo, shape, CPU.replace(tile_size=64))
    while True:
        try:
            ticks.append(next(gen))
        except StopIteration as stop:
            tiled = stop.value
            break
    assert ticks[-1].total == ticks[-1].done == 3 * 6  # 64 px tiles
    assert whole.shape == tiled.shape == (192, 384)
    assert len(np.unique(whole)) >= 2  # a model that says something
    assert np.mean(whole == tiled) > 0.995  # float rounding of the batches only


def test_glass_tiles_and_the_white_rule_give_background(painted):
    slide = _pyramid(painted, mpp=1.0)
    model = ColourSeg(mpp=1.0)
    geo, shape = map_geometry(slide, model, CamParams(out_stride=8))
    params = CamParams(device="cpu", tile_size=64, out_stride=8)  # skip_glass on
    ticks = []
    gen = slide_seg(slide, model, geo, shape, params, glass=PostprocParams(white_threshold=150))
    while True:
        try:
            ticks.append(next(gen))
        except StopIteration as stop:
            mask = stop.value
            break
    assert ticks[-1].info["glass"] >= 3  # the tissue-free corners never ran the model
    assert (mask[13:36, 9:27] == 0).all()  # red: rows 104-288, cols 72-216 (inside the block)
    assert mask[0, 0] == 3 and mask[-1, 0] == 3


def test_a_cam_model_is_refused_with_one_line(painted):
    from wsss_napari.models.config import ModelConfig

    model = ColourSeg()
    model.config = ModelConfig(kind="cam", input_size=32, mpp=1.0)
    slide = Slide.from_arrays(painted, mpp=1.0)
    with pytest.raises(WsssError, match="segmentation mask needs a stage-2 model"):
        run_to_end(slide_seg(slide, model, MaskGeometry(downsample=4), (10, 10), CPU))


def test_the_regional_vote_acts_in_microns_on_slides_as_on_images():
    """The vote's sigma is in microns: a slide at 0.5 um/px, mapped at the model's 1 um/px,
    gives the map of the same image at 1 um/px; a stroma band inside normal lung as wide
    as the vote's sigma narrows, but is not swallowed."""
    import cv2

    from wsss_napari.inference.predict import predict_mask

    model = ColourSeg(mpp=1.0, green=True)
    rgb = np.full((160, 160, 3), BLUE, np.uint8)  # normal lung (1 um/px) ...
    rgb[:, 65:95] = (40, 200, 40)  # ... around a 30 um band that looks like stroma
    params = CPU.replace(out_stride=1, context_um=20.0)
    image_map = predict_mask(model, rgb, params)
    level0 = cv2.resize(rgb, (320, 320), interpolation=cv2.INTER_NEAREST)
    slide = Slide.from_arrays([level0, rgb], mpp=0.5, name="band")
    geo, shape = map_geometry(slide, model, params)
    assert shape == (160, 160) and geo.downsample == 2.0
    slide_map = run_to_end(slide_seg(slide, model, geo, shape, params))
    assert np.mean(slide_map == image_map) > 0.99
    band = int((slide_map[80] == 1).sum())  # stroma pixels across the band
    plain = run_to_end(slide_seg(slide, model, geo, shape, params.replace(context_um=0.0)))
    assert int((plain[80] == 1).sum()) == 30 and 0 < band < 30
    swallowed = run_to_end(slide_seg(slide, model, geo, shape, params.replace(context_um=40.0)))
    assert not (swallowed == 1).any()  # a region's sigma wider than the band: all normal


def test_region_rgb_reads_known_pixels_at_every_scale():
    """The one reader of slide pixels under a map (whole maps and each tile of one): known
    pixels of a two-level slide of 8 px blocks, read exactly, shrunk and enlarged."""
    base = np.random.default_rng(0).integers(0, 256, (50, 75, 3), dtype=np.uint8)
    l0 = np.kron(base, np.ones((8, 8, 1), np.uint8))  # 400 x 600, blocks of 8 px
    slide = Slide.from_arrays([l0, l0[::2, ::2]], mpp=0.5)
    assert (region_rgb(slide, MaskGeometry(y=37, x=91), (50, 60)) == l0[37:87, 91:151]).all()
    half = region_rgb(slide, MaskGeometry(y=40, x=100, downsample=2), (30, 40))
    assert (half == l0[40:100:2, 100:180:2]).all()  # level 1 itself, no resampling
    # one map pixel per block: level 1 area-averaged 4 x 4 -> the block's own colour
    assert (region_rgb(slide, MaskGeometry(downsample=8), (50, 75)) == base).all()
    # finer than level 0: bilinear; pixels whose neighbours lie in one block keep its colour
    big = region_rgb(slide, MaskGeometry(y=16, x=24, downsample=0.5), (64, 64))
    c = np.arange(64) / 2 + 0.25  # level-0 index of each map pixel's centre, minus 16 / 24
    ry, rx = c + 16, c + 24
    iny = np.floor((ry - 0.5) / 8) == np.floor((ry + 0.5) / 8)
    inx = np.floor((rx - 0.5) / 8) == np.floor((rx + 0.5) / 8)
    want = base[(ry // 8).astype(int)][:, (rx // 8).astype(int)]
    assert iny.sum() > 40 and inx.sum() > 40
    assert (big[np.ix_(iny, inx)] == want[np.ix_(iny, inx)]).all()
    # ... and those that straddle two blocks blend them (bilinear, not nearest)
    j = int(np.flatnonzero(inx)[0])
    lo = base[((ry - 0.5) // 8).astype(int), int(rx[j] // 8)].astype(int)
    hi = base[((ry + 0.5) // 8).astype(int), int(rx[j] // 8)].astype(int)
    col = big[:, j].astype(int)
    assert ((col >= np.minimum(lo, hi) - 1) & (col <= np.maximum(lo, hi) + 1)).all()
    assert ((col > np.minimum(lo, hi) + 1) & (col < np.maximum(lo, hi) - 1))[~iny].any()
    # outside the slide: white
    assert (region_rgb(slide, MaskGeometry(y=390, x=590), (20, 20))[10:, 10:] == 255).all()
