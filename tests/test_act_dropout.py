"""Activation dropout (ADL): the mask hides exactly the hottest positions of the drawn patches,
changes the loss only through them, and ``train-cls --act-dropout`` trains a loadable model."""

from __future__ import annotations

import pytest
import torch

from wsss_napari.models.checkpoint import load_model
from wsss_napari.params import TrainClsParams
from wsss_napari.progress import run_to_end
from wsss_napari.sample.synth import write_patch_dataset
from wsss_napari.train.act_dropout import GAMMA, drop_mask
from wsss_napari.train.cls import _cam_loss, train_classifier


def test_mask_hides_the_hottest_positions_of_drawn_patches_only():
    feats = torch.zeros(2, 4, 3, 3)
    feats[:, :, 1, 2] = 10.0          # the peak
    feats[:, :, 0, 0] = 10.0 * GAMMA  # exactly at the threshold: dropped too
    feats[:, :, 2, 1] = 8.0           # below it: kept
    m = drop_mask(feats, rate=1.0)
    assert m.shape == (2, 1, 3, 3)
    assert m[:, 0, 1, 2].eq(0).all() and m[:, 0, 0, 0].eq(0).all()
    assert int(m.eq(0).sum()) == 4  # two positions in each of the two patches
    assert drop_mask(feats, rate=0.0).eq(1).all()
    gen = torch.Generator().manual_seed(0)
    drawn = drop_mask(torch.rand(400, 2, 4, 4) + 0.01, 0.25, gen).eq(0).flatten(1).any(1)
    assert 0.15 < drawn.float().mean() < 0.35


class _Cam(torch.nn.Module):
    """A CamNet-shaped toy: fused features = the input, a 1x1 classifier, [0, 1] scaling."""

    def __init__(self):
        super().__init__()
        self.classifier = torch.nn.Conv2d(3, 2, 1, bias=False)
        self.pixel_mean, self.pixel_std = torch.zeros(1, 3, 1, 1), torch.full((1, 3, 1, 1), 255.0)

    def fused_features(self, x):
        return x


def test_loss_without_drawn_patches_is_the_plain_loss_and_drawn_ones_change_it():
    torch.manual_seed(0)
    m, bce = _Cam(), torch.nn.BCEWithLogitsLoss()
    x, y = torch.rand(4, 3, 8, 8), torch.tensor([[1.0, 0], [0, 1], [1, 1], [0, 0]])
    plain = float(bce(m.classifier(x).mean(dim=(2, 3)), y).detach())
    params = TrainClsParams(act_dropout=1e-9)  # on, but (almost surely) no patch drawn
    assert float(_cam_loss(params, m, bce)(m, x, y, 0)) == pytest.approx(plain, rel=1e-6)
    dropped = _cam_loss(params.replace(act_dropout=1.0), m, bce)
    assert abs(float(dropped(m, x, y, 0)) - plain) > 1e-5
    # the drop is drawn from (seed, step): the same step twice gives the same loss
    assert float(dropped(m, x, y, 3)) == float(dropped(m, x, y, 3))


def test_train_cls_with_act_dropout(tmp_path):
    data = write_patch_dataset(tmp_path / "p", 12, size=64, seed=2)
    params = TrainClsParams(backbone="test_resnet", pretrained=False, epochs=1, batch_size=6,
                            crop_size=64, val_fraction=0.0, act_dropout=0.5, seed=0,
                            device="cpu")
    model = load_model(run_to_end(train_classifier(data, tmp_path / "m.safetensors", params)))
    assert model.config.extra["train"]["act_dropout"] == 0.5
    bce = torch.nn.BCEWithLogitsLoss()
    assert _cam_loss(params, model, bce) is not None
    # Puzzle-CAM's loss replaces it; a model without fused features trains without it
    assert _cam_loss(params.replace(puzzle=1.0), model, bce) is None
    assert _cam_loss(params, torch.nn.Linear(2, 2), bce) is None
    assert _cam_loss(params.replace(act_dropout=0.0), model, bce) is None
    assert TrainClsParams().act_dropout == 0.75  # the default (docs/training.md: measured)
