"""Multi-scale CAMs of one image: shapes, range, batching invariance, and localisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wsss_napari import WsssError
from wsss_napari.inference.multiscale import multiscale_cam
from wsss_napari.models.config import ModelConfig
from wsss_napari.models.registry import build_model
from wsss_napari.params import CamParams

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(ModelConfig(backbone="test_resnet", input_size=64)).eval()


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (90, 150, 3), dtype=np.uint8)


@pytest.mark.parametrize("params", [
    CamParams(device="cpu"),
    CamParams(device="cpu", scales=(1.0,), flip=True),
    CamParams(device="cpu", scales=(0.7, 1.3), crop_size=60, stride=25),  # off the CAM grid
    CamParams(device="cpu", scales=(1.0,), crop_size=256),  # crop larger than the image
], ids=["default", "flip", "odd-crop", "big-crop"])
def test_shapes_and_range(model, image, params):
    res = multiscale_cam(model, image, params)
    assert res.cams.shape == (3, 90, 150) and res.cams.dtype == np.float32
    assert res.cams.min() >= 0 and res.cams.max() <= 1
    peaks = res.cams.reshape(3, -1).max(1)  # each class: its maximum, or all zero
    assert np.all(np.isclose(peaks, 1.0) | (peaks == 0)) and peaks.max() == pytest.approx(1.0)
    assert res.scores.shape == (3,) and np.all((res.scores > 0) & (res.scores < 1))


def test_batch_size_does_not_change_the_result(model, image):
    a = multiscale_cam(model, image, CamParams(device="cpu", batch_size=1))
    b = multiscale_cam(model, image, CamParams(device="cpu", batch_size=64))
    np.testing.assert_allclose(a.cams, b.cams, atol=1e-5)
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-6)


def test_streams_do_not_change_the_result(model, image):
    """Two CPU streams (scales prepared concurrently, the last batches split between the
    streams) give the one-stream maps."""
    from wsss_napari.device import available_cores

    a = multiscale_cam(model, image, CamParams(device="cpu", threads=1, batch_size=5))
    b = multiscale_cam(model, image, CamParams(device="cpu", threads=2, batch_size=5))
    np.testing.assert_allclose(a.cams, b.cams, atol=1e-5)
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-6)
    if available_cores() < 2:
        pytest.skip("one core: both runs used one stream")


def test_normalize_in_place_equals_normalize(model, image):
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    want = model.normalize(x)
    y = x.contiguous(memory_format=torch.channels_last)
    got = model.normalize_(y)
    assert got is y and torch.equal(got, want)


def test_single_crop_equals_the_model(model):
    """One crop at one scale: the result is the model's CAM upsampled, and its score."""
    from torch.nn import functional as F

    img = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    res = multiscale_cam(model, img, CamParams(device="cpu", scales=(1.0,)))
    x = model.normalize(torch.from_numpy(img).permute(2, 0, 1)[None])
    with torch.inference_mode():
        logits, cams = model.logits_and_cams(x)
        up = F.interpolate(cams, size=(64, 64), mode="bilinear", align_corners=False)[0]
    up = up.numpy()
    peak = np.maximum(up.reshape(3, -1).max(1), 1e-5)[:, None, None]
    np.testing.assert_allclose(res.cams, up / peak, atol=1e-5)
    np.testing.assert_allclose(res.scores, torch.sigmoid(logits[0]).numpy(), atol=1e-6)


def test_gradcam_model_works_downstream(image):
    vit = build_model(ModelConfig(backbone="test_vit", arch="gradcam", input_size=64))
    res = multiscale_cam(vit, image, CamParams(device="cpu", scales=(1.0,)))
    assert res.cams.shape == (3, 90, 150) and res.cams.max() == pytest.approx(1.0)


def test_bad_images_refused(model):
    with pytest.raises(WsssError, match="RGB"):
        multiscale_cam(model, np.zeros((10, 10), np.uint8), CamParams(device="cpu"))
    with pytest.raises(WsssError, match="uint8"):
        multiscale_cam(model, np.zeros((10, 10, 3), np.float32), CamParams(device="cpu"))


@pytest.mark.slow
def test_trained_cams_localise_tumor():
    """A tiny model trained a few steps on synthetic patch labels puts its tumor CAM on the
    tumor region of an unseen synthetic image (weak labels -> localisation)."""
    from wsss_napari.sample.synth import make_patches, make_tissue

    torch.manual_seed(0)
    patches = make_patches(48, size=64, seed=0)
    x = torch.from_numpy(np.stack([p[0] for p in patches])).permute(0, 3, 1, 2)
    y = torch.from_numpy(np.stack([p[2] for p in patches])).float()
    m = build_model(ModelConfig(backbone="test_resnet", input_size=64))
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    m.train()
    for step in range(80):
        idx = torch.randint(0, len(x), (16,))
        xb = x[idx].flip(-1) if step % 2 else x[idx]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(m(m.normalize(xb)), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    rgb, mask = make_tissue(256, 256, seed=7)
    tumor = mask == 0
    assert 0.1 < tumor.mean() < 0.9
    res = multiscale_cam(m, rgb, CamParams(device="cpu", scales=(1.0, 1.5)))
    inside, outside = res.cams[0][tumor].mean(), res.cams[0][~tumor].mean()
    assert inside > 0.3 and inside > 3 * outside
    assert res.scores[0] > 0.5


def test_cpu_streams_do_not_change_the_result_and_threads_are_restored(model, image):
    from wsss_napari.device import available_cores, cpu_plan

    before = torch.get_num_threads()
    one = multiscale_cam(model, image, CamParams(device="cpu", batch_size=4, threads=1))
    many = multiscale_cam(model, image, CamParams(device="cpu", batch_size=4, threads=64))
    np.testing.assert_allclose(one.cams, many.cams, atol=1e-5)
    assert torch.get_num_threads() == before
    plan = cpu_plan(64)  # never more than the cores this process may use
    assert plan.streams * plan.intra <= available_cores() and cpu_plan(1).streams == 1


def test_tiles_of_an_image_equal_the_whole_image(model, image):
    """Any window that holds a core's crops (its reach) gives that core's whole-image maps."""
    from wsss_napari.inference.multiscale import iter_raw_cams, iter_window_cams, reach
    from wsss_napari.progress import run_to_end

    image = np.random.default_rng(5).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    params = CamParams(device="cpu", scales=(0.75, 1.0, 1.5, 2.0), stride=24)
    whole, _ = run_to_end(iter_raw_cams(model, image, params, out_stride=2))
    h, w = image.shape[:2]
    halo = reach(model, params)
    core = (120, 130, 40, 50)
    wy, wx = max(0, core[0] - halo), max(0, core[1] - halo)
    wy1, wx1 = min(h, core[0] + core[2] + halo), min(w, core[1] + core[3] + halo)
    part, _, n = run_to_end(iter_window_cams(
        model, image[wy:wy1, wx:wx1], params, region_shape=(h, w),
        window_box=(wy, wx, wy1 - wy, wx1 - wx), core_box=core, out_stride=2))
    assert wy > 0 and wx > 0 and wy1 < h and wx1 < w  # a real part of the image
    np.testing.assert_allclose(part, whole[:, 60:80, 65:90], atol=1e-5)


def test_gradcam_batches_in_concurrent_threads_keep_their_own_features():
    """CPU streams run one Grad-CAM model in two threads at once: each batch's maps must be
    its own (a shared forward hook used to hand one thread the other's features)."""
    from concurrent.futures import ThreadPoolExecutor

    vit = build_model(ModelConfig(backbone="test_vit", arch="gradcam", input_size=64)).eval()
    gen = torch.Generator().manual_seed(0)
    batches = [torch.rand(2, 3, 64, 64, generator=gen) for _ in range(8)]
    serial = [vit.logits_and_cams(b)[1] for b in batches]
    with ThreadPoolExecutor(2) as pool:
        for _ in range(3):
            together = list(pool.map(lambda b: vit.logits_and_cams(b)[1], batches))
            for a, b in zip(serial, together, strict=True):
                torch.testing.assert_close(a, b)


@pytest.mark.parametrize("eff", [2.0, 128 / 84, 128 / 112])
def test_opencv_enlargement_equals_interpolate(eff):
    """The scales' enlargement on the CPU (OpenCV on channels_last pixels) gives
    F.interpolate's pixels and size: a row more (OpenCV rounds the size) would be image
    where the engine pads white."""
    from torch.nn import functional as F

    from wsss_napari.inference.crop_blend import _resize

    rgb = np.random.default_rng(3).integers(0, 256, (173, 211, 3), dtype=np.uint8)
    x = (torch.from_numpy(rgb).permute(2, 0, 1)[None].float() - 128.0) / 40.0  # HWC memory
    for window in (x, x[..., 7:150, 13:200]):
        ref = F.interpolate(window, scale_factor=eff, mode="bilinear", align_corners=False,
                            recompute_scale_factor=False)
        got = _resize(window, eff)
        assert got.shape == ref.shape and got.stride(1) == 1  # channels_last, no copy
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
