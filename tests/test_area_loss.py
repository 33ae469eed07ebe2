"""Area loss: targets only where the patch label is exact at a position, glass excluded, and a
CAM spread over a single-label patch's tissue scores better than a hot spot with the same
pooled logit (which the classification loss cannot tell apart)."""

from __future__ import annotations

import torch

from wsss_napari.models.checkpoint import load_model
from wsss_napari.params import TrainClsParams
from wsss_napari.progress import run_to_end
from wsss_napari.sample.synth import write_patch_dataset
from wsss_napari.train.area_loss import GLASS_GREY, area_loss, implied_targets, tissue_positions
from wsss_napari.train.cls import _cam_loss, train_classifier


def _half_glass(b: int = 1, size: int = 16) -> torch.Tensor:
    """0-255 RGB batch: pink tissue in the left half, glass (255) in the right half."""
    raw = torch.full((b, 3, size, size), 255.0)
    raw[:, 0, :, : size // 2], raw[:, 1:, :, : size // 2] = 200.0, 120.0
    return raw


def test_tissue_positions_follow_the_glass_threshold():
    t = tissue_positions(_half_glass(), (2, 2))
    assert t.shape == (1, 1, 2, 2)
    assert t[0, 0, :, 0].all() and not t[0, 0, :, 1].any()
    grey = torch.full((1, 3, 4, 4), GLASS_GREY)
    assert tissue_positions(grey, (1, 1)).all()          # at the threshold: tissue
    assert not tissue_positions(grey + 1, (1, 1)).any()  # above it: glass


def test_targets_only_where_the_label_is_exact():
    y = torch.tensor([[1.0, 0, 0], [1.0, 1.0, 0]])
    tissue = torch.zeros(2, 1, 2, 2, dtype=torch.bool)
    tissue[:, :, :, 0] = True
    target, weight = implied_targets(y, tissue)
    assert target.shape == weight.shape == (2, 3, 2, 2)
    # single-label patch: its class is a target 1 on tissue only; absent classes 0 everywhere
    assert weight[0, 0, :, 0].eq(1).all() and weight[0, 0, :, 1].eq(0).all()
    assert target[0, 0].eq(1).all()
    assert weight[0, 1:].eq(1).all() and target[0, 1:].eq(0).all()
    # multi-label patch: its present classes say nothing anywhere; the absent one is 0
    assert weight[1, :2].eq(0).all()
    assert weight[1, 2].eq(1).all() and target[1, 2].eq(0).all()


def test_spread_cam_beats_a_hot_spot_with_the_same_pooled_logit():
    raw = torch.full((1, 3, 4, 4), 150.0)  # all tissue
    y = torch.tensor([[1.0, 0.0]])
    spread = torch.zeros(1, 2, 4, 4)
    spread[:, 0] = 2.0
    spread[:, 1] = -4.0
    spot = spread.clone()
    spot[:, 0] = -2.0
    spot[0, 0, 0, 0] = 2.0 + 15 * 4.0   # same mean: the classification loss is equal
    assert torch.allclose(spread.mean(dim=(2, 3)), spot.mean(dim=(2, 3)))
    assert float(area_loss(spread, raw, y)) < float(area_loss(spot, raw, y))
    # glass carries no positive target: a CAM that is low on glass costs nothing more there
    glassy = _half_glass(size=4)
    low_on_glass = spread.clone()
    low_on_glass[0, 0, :, 2:] = -4.0
    assert float(area_loss(low_on_glass, glassy, y)) == float(area_loss(spread, glassy, y))


def test_train_cls_with_area_loss_and_act_dropout(tmp_path):
    data = write_patch_dataset(tmp_path / "p", 12, size=64, seed=2)
    params = TrainClsParams(backbone="test_resnet", pretrained=False, epochs=1, batch_size=6,
                            crop_size=64, val_fraction=0.0, act_dropout=0.5, area_loss=1.0,
                            seed=0, device="cpu")
    model = load_model(run_to_end(train_classifier(data, tmp_path / "m.safetensors", params)))
    assert model.config.extra["train"]["area_loss"] == 1.0
    # the combined loss adds the area term to the classification loss of the same batch
    bce = torch.nn.BCEWithLogitsLoss()
    x = model.normalize(torch.randint(0, 200, (2, 3, 64, 64)).float())
    y = torch.tensor([[1.0, 0, 0], [0, 1.0, 1.0]])
    with torch.no_grad():
        cls_only = float(_cam_loss(params.replace(area_loss=0.0), model, bce)(model, x, y, 0))
        both = float(_cam_loss(params, model, bce)(model, x, y, 0))
    assert both > cls_only
    assert TrainClsParams().area_loss == 0.0
