"""SegNet: both decoders on a tiny timm encoder, checkpoints, dispatch by config."""

from __future__ import annotations

import pytest
import torch

from wsss_napari import WsssError
from wsss_napari.models.checkpoint import load_model, save_model
from wsss_napari.models.config import ModelConfig
from wsss_napari.models.registry import build_model
from wsss_napari.models.seg import SegNet


@pytest.mark.parametrize("arch", ["deeplabv3plus", "unet"])
@pytest.mark.parametrize("hw", [(64, 64), (72, 88)])
def test_output_is_classes_plus_background_at_input_resolution(arch, hw):
    model = build_model(ModelConfig(kind="seg", arch=arch, backbone="test_resnet")).eval()
    with torch.inference_mode():
        out = model(torch.randn(2, 3, *hw))
    assert out.shape == (2, 4, *hw)
    assert torch.isfinite(out).all()


def test_batch_of_one_trains():
    """A batch of one through the train-mode network (BatchNorm over one image) gives finite,
    non-zero gradients in the encoder and the decoder."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind="seg", arch="deeplabv3plus", backbone="test_resnet"))
    model.train()
    loss = model(torch.randn(1, 3, 64, 64)).logsumexp(1).mean()
    loss.backward()
    for part in (model.encoder, model.decoder):
        grads = [p.grad for p in part.parameters() if p.requires_grad]
        assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
        assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("arch", ["deeplabv3plus", "unet"])
def test_checkpoint_round_trip_and_dispatch(arch, tmp_path):
    config = ModelConfig(kind="seg", arch=arch, backbone="test_resnet", input_size=64)
    model = build_model(config)
    assert isinstance(model, SegNet)
    path = tmp_path / f"{arch}.safetensors"
    save_model(model.eval(), path)
    loaded = load_model(path)
    assert isinstance(loaded, SegNet) and loaded.config.arch == arch
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(model(x), loaded(x))
    u8 = torch.full((1, 3, 8, 8), 255, dtype=torch.uint8)
    assert loaded.normalize(u8).dtype == torch.float32


def test_wrong_kind_is_refused():
    with pytest.raises(WsssError, match="kind='seg'"):
        SegNet(ModelConfig(kind="cam", backbone="test_resnet"))


def test_prediction_does_not_depend_on_the_window_size():
    """Fully convolutional: a pixel far from the borders gets the same logits in a small crop
    and in a large image (no global pooling that changes meaning with the input size)."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind="seg", arch="deeplabv3plus", backbone="test_resnet"))
    model.eval()
    big = torch.randn(1, 3, 256, 256)
    with torch.inference_mode():
        whole = model(big)[..., 96:160, 96:160]
        part = model(big[..., 64:192, 64:192])[..., 32:96, 32:96]
    torch.testing.assert_close(whole, part, rtol=0, atol=1e-2)  # padding reaches in a little
