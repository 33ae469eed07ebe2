"""Metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from wsss_napari import WsssError
from wsss_napari.metrics import confusion_matrix, force_background, format_report, iou_report


def test_hand_computed_ious():
    gt = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [3, 3, 3, 255]], np.uint8)
    pred = np.array([[0, 1, 1, 1], [0, 0, 1, 3], [3, 3, 0, 2]], np.uint8)
    conf = confusion_matrix(pred, gt)
    assert conf.sum() == 11  # the 255 pixel is ignored
    assert conf[0].tolist() == [3, 1, 0, 0] and conf[1].tolist() == [0, 3, 0, 1]
    rep = iou_report(conf)
    # tumor: tp 3, gt 4, pred 4 -> 3/5; stroma: tp 3, gt 4, pred 4 -> 3/5
    # normal: absent from gt and pred (the 2 is ignored) -> NaN, skipped; bg: tp 2 / (3+3-2)
    assert rep["iou"]["tumor"] == pytest.approx(0.6)
    assert rep["iou"]["stroma"] == pytest.approx(0.6)
    assert math.isnan(rep["iou"]["normal"])
    assert rep["iou"]["background"] == pytest.approx(0.5)
    assert rep["miou"] == pytest.approx(0.6)
    assert rep["miou_bg"] == pytest.approx((0.6 + 0.6 + 0.5) / 3)
    assert rep["fwiou"] == pytest.approx(4 / 11 * 0.6 + 4 / 11 * 0.6 + 3 / 11 * 0.5)
    assert rep["accuracy"] == pytest.approx(8 / 11)
    text = format_report(rep)
    assert "mIoU (tumor/stroma/normal)" in text and "0.6000" in text


def test_ground_truth_scores_one(wsss4luad_val):
    from PIL import Image

    mask = np.asarray(Image.open(wsss4luad_val / "mask" / "00.png"))
    rep = iou_report(confusion_matrix(mask, mask))
    assert rep["miou"] == 1.0 and rep["miou_bg"] == 1.0 and rep["fwiou"] == pytest.approx(1.0)


def test_forced_background_and_errors():
    pred = np.zeros((2, 3), np.uint8)
    out = force_background(pred, np.array([[1, 0, 0], [0, 0, 1]]))
    assert out.tolist() == [[3, 0, 0], [0, 0, 3]] and pred.max() == 0
    with pytest.raises(WsssError, match="differ in size"):
        confusion_matrix(pred, np.zeros((3, 3), np.uint8))
    with pytest.raises(WsssError, match="outside"):
        confusion_matrix(pred + 7, pred)


def test_segmentation_validation_uses_the_same_miou_as_eval():
    """train-seg's ``val_miou`` is the tumor / stroma / normal mIoU of :func:`iou_report`
    (it was the mean over the 4 labels present); the 4-label mean is ``val_miou_bg``."""
    import torch

    from wsss_napari.train.seg import evaluate_segmenter

    gt = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [3, 3, 3, 255]], np.uint8)
    pred = np.array([[0, 1, 1, 1], [0, 0, 1, 3], [3, 3, 0, 2]], np.uint8)

    class Fixed(torch.nn.Module):  # predicts ``pred`` whatever the input
        config = type("C", (), {"num_classes": 3})()

        def normalize(self, x):
            return x.float()

        def forward(self, x):
            return torch.nn.functional.one_hot(torch.from_numpy(pred).long(), 4).permute(
                2, 0, 1)[None].float()

    loader = [(torch.zeros(1, 3, 3, 4, dtype=torch.uint8),
               torch.from_numpy(gt.astype(np.int64))[None])]
    val = evaluate_segmenter(Fixed(), loader, torch.device("cpu"), use_amp=False)
    rep = iou_report(confusion_matrix(pred, gt))
    assert val["miou"] == pytest.approx(rep["miou"]) and val["miou"] == pytest.approx(0.6)
    assert val["miou_bg"] == pytest.approx(rep["miou_bg"])
    assert val["pixel_acc"] == pytest.approx(rep["accuracy"])
