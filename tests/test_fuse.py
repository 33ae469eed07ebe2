"""Inference copies (models/fuse.py): BatchNorm folded, static "same" padding; the CAMs they
give equal the model's, and the model itself (saved, fine-tuned) is never changed."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from wsss_napari.inference.multiscale import multiscale_cam
from wsss_napari.models import fuse
from wsss_napari.models.checkpoint import load_model
from wsss_napari.models.config import ModelConfig
from wsss_napari.models.registry import build_model
from wsss_napari.params import CamParams

torch.set_num_threads(1)
CROP = Path(__file__).resolve().parents[1] / "sample_data" / "CMU-1-crop.tif"


def _unfused(monkeypatch):
    """Make the engine run the model as it is (the code before the inference copies)."""
    monkeypatch.setattr(fuse, "inference_model", lambda model: model)


def _bn_count(model) -> int:
    return sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


@pytest.fixture(scope="module")
def resnet():
    """A tiny timm ResNet whose BatchNorm layers hold non-trivial statistics (freshly built
    ones are identities, which any folding reproduces)."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="test_resnet", input_size=64)).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.3, 3.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    return model


def test_default_model_cams_fused_equal_unfused(monkeypatch):
    """The shipped model (tf_efficientnet_lite0: BatchNorm after every convolution, five
    Conv2dSame) on a real H&E crop: the engine's maps with and without the copy."""
    import tifffile

    model = load_model("default")
    rgb = np.ascontiguousarray(tifffile.imread(CROP)[:256, :256, :3])
    params = CamParams(device="cpu", threads=1)
    fused = multiscale_cam(model, rgb, params)
    net = fuse.inference_model(model)
    assert net is not model and _bn_count(model) == 48 and _bn_count(net) == 0
    assert not [m for m in net.modules() if type(m).__name__ == "Conv2dSame"]
    with monkeypatch.context() as mp:
        _unfused(mp)
        plain = multiscale_cam(model, rgb, params)
    assert np.abs(fused.cams - plain.cams).max() < 1e-4
    np.testing.assert_allclose(fused.scores, plain.scores, atol=1e-5)
    assert fused.cams.max() == pytest.approx(1.0) and plain.cams.std() > 0.05


def test_folding_a_resnet_and_the_model_stays_unfused(resnet, monkeypatch):
    before = {k: v.clone() for k, v in resnet.state_dict().items()}
    rgb = np.random.default_rng(1).integers(0, 256, (96, 80, 3), dtype=np.uint8)
    fused = multiscale_cam(resnet, rgb, CamParams(device="cpu", scales=(0.75, 1.0)))
    net = fuse.inference_model(resnet)
    assert net is not resnet and _bn_count(net) == 0 and _bn_count(resnet) > 0
    assert fuse.inference_model(resnet) is net  # cached
    with monkeypatch.context() as mp:
        _unfused(mp)
        plain = multiscale_cam(resnet, rgb, CamParams(device="cpu", scales=(0.75, 1.0)))
    assert np.abs(fused.cams - plain.cams).max() < 1e-4
    # the model, what is saved and what fine-tuning copies are untouched
    after = resnet.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    from wsss_napari.train.finetune import _trainable_copy

    work = _trainable_copy(resnet, torch.device("cpu"))
    assert _bn_count(work) == _bn_count(resnet) and work.training


def test_copy_is_rebuilt_when_the_weights_change(resnet, monkeypatch):
    """Fine-tuning in place (an optimizer step) or loading other weights: the next maps come
    from the new weights, never from a stale folded copy."""
    model = copy.deepcopy(resnet)
    rgb = np.random.default_rng(2).integers(0, 256, (70, 70, 3), dtype=np.uint8)
    params = CamParams(device="cpu", scales=(1.0,))
    first = multiscale_cam(model, rgb, params)
    old = fuse.inference_model(model)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    x = model.normalize(torch.from_numpy(rgb).permute(2, 0, 1)[None].float())
    model(x).sum().backward()  # BatchNorm in training mode also moves its running stats
    opt.step()
    model.eval()
    second = multiscale_cam(model, rgb, params)
    assert fuse.inference_model(model) is not old
    with monkeypatch.context() as mp:
        _unfused(mp)
        plain = multiscale_cam(model, rgb, params)
    assert np.abs(second.cams - plain.cams).max() < 1e-4
    assert np.abs(second.cams - first.cams).max() > 1e-2  # the weights did change the maps
    assert fuse.inference_model(model.train()) is model  # training mode: never a copy
    model.eval()


@pytest.mark.parametrize("kernel,stride", [(3, 2), (5, 2), (3, 1), (4, 2)])
def test_static_same_conv_equals_timm_conv2d_same(kernel, stride):
    from timm.layers import Conv2dSame

    torch.manual_seed(0)
    conv = Conv2dSame(6, 6, kernel, stride=stride, groups=3, bias=True).eval()
    static = fuse.StaticSameConv(conv)
    for h, w in [(16, 16), (15, 16), (17, 9), (8, 5)]:
        x = torch.randn(2, 6, h, w).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            a, b = conv(x), static(x)
        assert a.shape == b.shape
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)


def test_a_copy_that_differs_is_refused(resnet, monkeypatch):
    """If folding ever changed the maps (a pairing the trace got wrong), the model runs as
    it is."""
    model = copy.deepcopy(resnet)
    real = fuse._fold

    def wrong(conv, bn):
        real(conv, bn)
        with torch.no_grad():
            conv.bias.add_(1.0)

    monkeypatch.setattr(fuse, "_fold", wrong)
    assert fuse.inference_model(model) is model


def test_finetuning_after_maps_trains_the_model_not_its_copy(resnet, monkeypatch):
    """The widget's correction flow: maps of a model, fine-tuning on a corrected region
    (``finetune`` trains a deep copy of the model), then maps of the fine-tuned model."""
    from wsss_napari.params import FinetuneParams
    from wsss_napari.sample.synth import make_tissue
    from wsss_napari.train.finetune import finetune

    model = copy.deepcopy(resnet)
    img, truth = make_tissue(128, 128, seed=4)
    params = CamParams(device="cpu", scales=(1.0,))
    before = multiscale_cam(model, img, params)
    copy_before = fuse.inference_model(model)
    gen = finetune(model, [(img, truth)], FinetuneParams(steps=3, batch_size=2, crop_size=64))
    try:
        while True:
            next(gen)
    except StopIteration as stop:
        tuned = stop.value.model
    assert _bn_count(tuned) == _bn_count(resnet) and tuned is not copy_before
    after = multiscale_cam(tuned, img, params)
    assert fuse.inference_model(tuned) not in (tuned, copy_before)
    with monkeypatch.context() as mp:
        _unfused(mp)
        plain = multiscale_cam(tuned, img, params)
    assert np.abs(after.cams - plain.cams).max() < 1e-4
    assert np.abs(after.cams - before.cams).max() > 1e-3  # the maps are the new model's
    assert fuse.inference_model(model) is copy_before  # the original is unchanged
