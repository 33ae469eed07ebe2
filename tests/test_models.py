"""CAM models build from scratch on tiny timm backbones and keep the CAM contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wsss_napari import WsssError
from wsss_napari.models.config import HE_MEAN, HE_STD, ModelConfig
from wsss_napari.models.registry import build_model, default_arch

torch.set_num_threads(1)

CNNS = ["test_resnet", "test_efficientnet", "test_convnext"]


@pytest.mark.parametrize("backbone", CNNS)
def test_camnet_channels_stride_and_gap(backbone):
    import timm

    cfg = ModelConfig(backbone=backbone, input_size=64)
    model = build_model(cfg).eval()
    ref = timm.create_model(backbone, features_only=True, out_indices=(-3, -2, -1))
    info = ref.feature_info
    assert model.feature_channels == info.channels()
    assert model.stride == min(info.reduction())
    assert model.classifier.in_channels == sum(info.channels())
    assert model.classifier.bias is None
    x = torch.randn(2, 3, 96, 64)
    with torch.inference_mode():
        maps = model.class_maps(x)
        logits = model(x)
        l2, cams = model.logits_and_cams(x)
    assert maps.shape == (2, 3, 96 // model.stride, 64 // model.stride)
    torch.testing.assert_close(logits, maps.mean(dim=(2, 3)))
    torch.testing.assert_close(l2, logits)
    assert (cams >= 0).all() and torch.equal(cams, torch.relu(maps))


def test_gradcam_vit_maps():
    cfg = ModelConfig(backbone="test_vit", arch=default_arch("test_vit"), input_size=64)
    assert cfg.arch == "gradcam"
    model = build_model(cfg).eval()
    x = torch.randn(2, 3, 64, 96)  # not square, not the ViT's native size
    with torch.inference_mode():  # Grad-CAM re-enables gradients locally
        logits, cams = model.logits_and_cams(x)
        assert model(x).shape == (2, 3)
    assert logits.shape == (2, 3)
    assert cams.shape == (2, 3, 64 // model.stride, 96 // model.stride)
    assert (cams >= 0).all() and cams.sum() > 0
    assert not any(p.grad is not None for p in model.parameters())


def test_default_arch_and_normalize():
    assert default_arch("test_resnet") == "camnet"
    assert default_arch("test_vit") == "gradcam"
    model = build_model(ModelConfig(backbone="test_resnet", input_size=64))
    white = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    out = model.normalize(white)[0, :, 0, 0].numpy()
    np.testing.assert_allclose(out, (1 - np.array(HE_MEAN)) / np.array(HE_STD), rtol=1e-5)


def test_config_roundtrip_and_validation():
    cfg = ModelConfig(backbone="test_resnet", mpp=0.5, extra={"note": "x"})
    again = ModelConfig.from_dict(cfg.to_dict())
    assert again == cfg
    assert ModelConfig.from_dict({**cfg.to_dict(), "future": 1}).extra["unknown_fields"] == {
        "future": 1}
    for bad in ({"kind": "det"}, {"arch": "unet"}, {"class_names": ()},
                {"class_colors": ((0, 0, 0),)}, {"input_size": 8}, {"std": (0, 1, 1)},
                {"mpp": -1.0}):
        with pytest.raises(WsssError, match="model config"):
            ModelConfig(**bad)


def test_unknown_backbone_and_offline_hub(monkeypatch):
    with pytest.raises(WsssError, match="unknown timm backbone"):
        build_model(ModelConfig(backbone="no_such_net"))
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no network access in tests: fail fast
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(WsssError, match="no local ImageNet weights.*efficientnet_lite0.*--weights"):
        build_model(ModelConfig(backbone="test_resnet"), pretrained=True)
