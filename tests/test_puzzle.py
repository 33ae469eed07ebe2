"""Puzzle-CAM: tiling is exactly invertible, the loss vanishes for a context-free model, and
``train-cls --puzzle`` trains a loadable model."""

from __future__ import annotations

import pytest
import torch

from wsss_napari import WsssError
from wsss_napari.models.checkpoint import load_model
from wsss_napari.params import TrainClsParams
from wsss_napari.progress import run_to_end
from wsss_napari.sample.synth import write_patch_dataset
from wsss_napari.train.cls import train_classifier
from wsss_napari.train.puzzle import merge, puzzle_loss, puzzle_weight, tile


def test_tile_and_merge_are_exact_inverses():
    x = torch.arange(2 * 3 * 8 * 6, dtype=torch.float32).reshape(2, 3, 8, 6)
    t = tile(x)
    assert t.shape == (8, 3, 4, 3)
    assert torch.equal(t[0], x[0, :, :4, :3]) and torch.equal(t[1], x[1, :, :4, :3])
    assert torch.equal(t[2 * 3 + 1], x[1, :, 4:, 3:])  # tile (1, 1) of image 1
    assert torch.equal(merge(t), x)


class _PixelModel(torch.nn.Module):
    """A 1x1 convolution: every map pixel sees only its own input pixel (no context)."""

    stride = 1

    def __init__(self, k: int = 1):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, k, padding=k // 2, bias=False)

    def class_maps(self, x):
        return self.conv(x)


def test_consistency_term_is_zero_without_context_and_weight_ramps_up():
    torch.manual_seed(0)
    m = _PixelModel()
    x, y = torch.randn(2, 3, 16, 16), torch.tensor([[1.0, 0, 1], [0, 1, 0]])
    loss, parts = puzzle_loss(m, x, y, torch.nn.BCEWithLogitsLoss(), alpha=4.0)
    assert parts["l1"] == pytest.approx(0.0, abs=1e-6)
    assert parts["cls"] == pytest.approx(parts["cls_merged"], rel=1e-5)
    m = _PixelModel(k=3)  # context: tiles differ at their borders
    assert puzzle_loss(m, x, y, torch.nn.BCEWithLogitsLoss(), alpha=4.0)[1]["l1"] > 1e-3
    assert [puzzle_weight(4.0, s, 100) for s in (0, 25, 50, 99)] == [0.0, 2.0, 4.0, 4.0]


def test_train_cls_with_puzzle(tmp_path):
    data = write_patch_dataset(tmp_path / "p", 12, size=64, seed=2)
    params = TrainClsParams(backbone="test_resnet", pretrained=False, epochs=1, batch_size=6,
                            crop_size=64, val_fraction=0.0, puzzle=4.0, seed=0, device="cpu")
    out = run_to_end(train_classifier(data, tmp_path / "m.safetensors", params))
    model = load_model(out)
    assert model.config.extra["train"]["puzzle"] == 4.0
    with pytest.raises(WsssError, match="multiple of"):
        run_to_end(train_classifier(data, tmp_path / "m2.safetensors",
                                    params.replace(crop_size=60)))
