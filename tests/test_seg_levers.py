"""SegFormer-style decoder, the bce+dice loss, and segmentation test-time augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from wsss_napari import WsssError
from wsss_napari.inference.tta import parse_tta, tta_probabilities
from wsss_napari.models.config import ModelConfig
from wsss_napari.models.seg import SegNet
from wsss_napari.params import CamParams, TrainSegParams
from wsss_napari.train.seg import bce_dice_loss


@pytest.mark.parametrize("encoder", ["test_resnet", "mobilenetv3_small_100"])
def test_segformer_decoder_gives_full_resolution_logits(encoder):
    torch.manual_seed(0)
    net = SegNet(ModelConfig(kind="seg", arch="segformer", backbone=encoder, input_size=64))
    head = net.decoder
    reds = net.encoder.feature_info.reduction()
    assert [reds[i] for i in head.used] == [r for r in reds if r >= 4]
    net.eval()
    with torch.no_grad():
        out = net(torch.randn(2, 3, 64, 96))
    assert out.shape == (2, 4, 64, 96)
    # all-MLP: the only spatial operators of the head are 1x1
    convs = [m for m in head.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(m.kernel_size == (1, 1) for m in convs)


def test_bce_dice_loss_rewards_the_right_answer_and_ignores_255():
    target = torch.tensor([[[0, 1], [3, 255]]])
    good = torch.full((1, 4, 2, 2), -8.0)
    for (y, x), c in {(0, 0): 0, (0, 1): 1, (1, 0): 3}.items():
        good[0, c, y, x] = 8.0
    bad = -good
    assert bce_dice_loss(good, target) < 0.01 < bce_dice_loss(bad, target)
    other = good.clone()
    other[0, :, 1, 1] = torch.tensor([9.0, -9.0, 9.0, -9.0])  # the ignored pixel
    torch.testing.assert_close(bce_dice_loss(other, target), bce_dice_loss(good, target))
    assert bce_dice_loss(good, torch.full((1, 2, 2), 255)) == 0


class _Positional(nn.Module):
    """Logits that depend on position (not equivariant): TTA changes them."""

    def forward(self, x):
        h, w = x.shape[-2:]
        ramp = torch.linspace(0, 3, w).view(1, 1, 1, w) + torch.linspace(0, 1, h).view(1, 1, h, 1)
        return torch.cat([x[:, :1] + ramp, x[:, 1:2] - ramp, x[:, 2:3] * 0.5], dim=1)


def test_d4_tta_is_invariant_to_the_symmetries_of_the_window():
    x = torch.randn(1, 3, 32, 32)
    model = _Positional()
    plain = tta_probabilities(model, x, "none")
    torch.testing.assert_close(plain, torch.softmax(model(x), dim=1))
    d4 = tta_probabilities(model, x, "d4")
    assert not torch.allclose(d4, plain)
    for k in range(1, 4):  # rotating the input rotates the averaged prediction exactly
        rotated = tta_probabilities(model, torch.rot90(x, k, dims=(2, 3)), "d4")
        torch.testing.assert_close(rotated, torch.rot90(d4, k, dims=(2, 3)))
    flipped = tta_probabilities(model, torch.flip(x, dims=[3]), "flips")
    torch.testing.assert_close(flipped, torch.flip(tta_probabilities(model, x, "flips"),
                                                   dims=[3]))
    # an equivariant model (per-pixel) is unchanged by any geometric TTA set
    conv = nn.Conv2d(3, 4, 1)
    with torch.no_grad():
        torch.testing.assert_close(tta_probabilities(conv, x, "d4"),
                                   tta_probabilities(conv, x, "none"))
        scaled = tta_probabilities(conv, x, "d4+scales")
    assert scaled.shape == (1, 4, 32, 32)


def test_tta_names_are_checked():
    assert len(parse_tta("d4+scales")[0]) == 8 and parse_tta("d4+scales")[1] == (0.75, 1.0,
                                                                                  1.25)
    with pytest.raises(WsssError, match="tta must be"):
        CamParams(tta="d8")
    with pytest.raises(WsssError, match="tta must be"):
        parse_tta("flips+zoom")
    with pytest.raises(WsssError, match="decoder must be"):
        TrainSegParams(decoder="fpn")
    with pytest.raises(WsssError, match="loss must be"):
        TrainSegParams(loss="focal")


def test_train_segformer_with_bce_dice_then_predict_with_tta(tmp_path):
    from PIL import Image

    from wsss_napari.cli import main
    from wsss_napari.models.checkpoint import load_model
    from wsss_napari.sample.synth import write_patch_dataset

    patches = write_patch_dataset(tmp_path / "p", 8, size=64, seed=6)
    out = tmp_path / "seg.safetensors"
    assert main(["train-seg", str(patches), str(patches / "masks"), "--out", str(out),
                 "--encoder", "test_resnet", "--decoder", "segformer", "--loss", "bce+dice",
                 "--epochs", "1", "--batch-size", "4", "--crop-size", "32",
                 "--val-fraction", "0", "--device", "cpu"]) == 0
    model = load_model(out)
    assert model.config.arch == "segformer"
    assert model.config.extra["train"]["loss"] == "bce+dice"
    images = tmp_path / "images"
    images.mkdir()
    for f in sorted(patches.glob("*.png"))[:2]:
        (images / f.name).write_bytes(f.read_bytes())
    pred = tmp_path / "pred"
    assert main(["predict", str(out), str(images), "--out", str(pred), "--tta", "d4+scales",
                 "--crop-size", "64", "--device", "cpu"]) == 0
    masks = sorted(pred.glob("*.png"))
    assert len(masks) == 2
    arr = np.asarray(Image.open(masks[0]))
    assert arr.shape == (64, 64) and arr.max() <= 3
