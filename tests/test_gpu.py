"""The CUDA path (AMP, channels_last, pinned uint8 uploads): CAMs, segmentation prediction,
fine-tuning and training. Skipped without CUDA (conftest: the ``gpu`` marker)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wsss_napari.models.config import ModelConfig
from wsss_napari.models.registry import build_model
from wsss_napari.params import CamParams, FinetuneParams, TrainClsParams
from wsss_napari.progress import run_to_end
from wsss_napari.sample.synth import make_tissue

pytestmark = pytest.mark.gpu


def _model(kind="cam", size=64):
    torch.manual_seed(0)
    arch = "camnet" if kind == "cam" else "deeplabv3plus"
    return build_model(ModelConfig(kind=kind, arch=arch, backbone="test_resnet",
                                   input_size=size)).eval()


def _rgb():
    return make_tissue(160, 224, seed=4)[0]


def test_cams_on_cuda_with_amp_match_the_cpu():
    from wsss_napari.inference.multiscale import multiscale_cam

    rgb = _rgb()
    rgb.setflags(write=False)  # a read-only array (zarr/dask views) is uploaded too
    cpu = multiscale_cam(_model(), rgb, CamParams(device="cpu", scales=(0.5, 1.0, 1.5)))
    model = _model()
    gpu = multiscale_cam(model, rgb, CamParams(device="cuda", amp=True,
                                               scales=(0.5, 1.0, 1.5)))
    first = next(p for p in model.parameters() if p.dim() == 4)
    assert first.is_cuda and first.is_contiguous(memory_format=torch.channels_last)
    assert np.abs(gpu.cams - cpu.cams).max() < 0.05  # float16 vs float32
    np.testing.assert_allclose(gpu.scores, cpu.scores, atol=0.02)


def test_pinned_upload_is_used_on_cuda(monkeypatch):
    from wsss_napari.inference.multiscale import multiscale_cam

    calls = []
    original = torch.Tensor.pin_memory

    def spy(self, *a, **k):
        calls.append(self.dtype)
        return original(self, *a, **k)

    monkeypatch.setattr(torch.Tensor, "pin_memory", spy)
    multiscale_cam(_model(), _rgb(), CamParams(device="cuda", scales=(1.0,)))
    assert calls == [torch.uint8]  # the image travels once, as bytes


def test_slide_cams_on_cuda_match_the_cpu(tmp_path):
    from wsss_napari.inference.slide_cam import slide_cams
    from wsss_napari.io.slide import Slide

    slide = Slide.from_arrays([make_tissue(384, 512, seed=2)[0]], mpp=0.5)
    params = CamParams(scales=(0.5, 1.0), tile_size=128, skip_glass=False)
    model = build_model(ModelConfig(backbone="test_resnet", input_size=64, mpp=0.5)).eval()
    a = run_to_end(slide_cams(slide, model, params.replace(device="cpu"),
                              cache_dir=tmp_path / "cpu"))
    b = run_to_end(slide_cams(slide, model, params.replace(device="cuda"),
                              cache_dir=tmp_path / "cuda"))
    assert np.abs(np.asarray(a.cams) - np.asarray(b.cams)).max() < 0.05


def test_segmentation_prediction_on_cuda_with_amp_matches_the_cpu():
    from wsss_napari.inference.predict import seg_probabilities

    model = _model("seg")
    rgb = _rgb()
    cpu = seg_probabilities(model, rgb, CamParams(device="cpu"), torch.device("cpu"))
    gpu = seg_probabilities(model, rgb, CamParams(device="cuda", amp=True), torch.device("cuda"))
    first = next(p for p in model.parameters() if p.dim() == 4)
    assert first.is_contiguous(memory_format=torch.channels_last)
    assert gpu.shape == cpu.shape and np.abs(gpu - cpu).max() < 0.05


@pytest.mark.parametrize("kind", ["cam", "seg"])
def test_finetuning_on_cuda_with_amp(kind):
    from wsss_napari.train.finetune import run_finetune

    img, m = make_tissue(128, 128, seed=3)
    res = run_finetune(_model(kind), [(img, m)],
                       FinetuneParams(steps=6, batch_size=4, crop_size=64, device="cuda"))
    assert res.steps_done == 6 and all(np.isfinite(res.losses))
    assert next(res.model.parameters()).is_cuda


def test_training_on_cuda_syncs_once_per_interval(tmp_path, monkeypatch):
    from wsss_napari.models.checkpoint import load_model
    from wsss_napari.sample.synth import write_patch_dataset
    from wsss_napari.train import loop
    from wsss_napari.train.cls import train_classifier

    data = write_patch_dataset(tmp_path / "p", 96, size=64, seed=5)
    syncs = []
    original = torch.Tensor.item
    monkeypatch.setattr(torch.Tensor, "item", lambda t: syncs.append(1) or original(t))
    params = TrainClsParams(backbone="test_resnet", pretrained=False, epochs=1, batch_size=4,
                            crop_size=48,
                            val_fraction=0.0, seed=1, device="cuda")
    ticks = []
    gen = train_classifier(data, tmp_path / "m.safetensors", params)
    try:
        while True:
            ticks.append(next(gen))
    except StopIteration as stop:
        out = stop.value
    steps = ticks[-1].total
    assert steps >= 2 * loop.LOG_EVERY and len(syncs) < steps / 2  # no .item() per step
    assert np.isfinite(load_model(out).config.extra["history"][-1]["loss"])
