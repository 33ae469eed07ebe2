"""Segmentation models predict in overlapping windows of their training size, any image size."""

from __future__ import annotations

import numpy as np
import pytest

from wsss_napari.inference.predict import predict_mask, seg_probabilities, window_weight
from wsss_napari.models.checkpoint import load_model
from wsss_napari.params import CamParams, TrainSegParams
from wsss_napari.progress import run_to_end
from wsss_napari.sample.synth import make_tissue, write_patch_dataset
from wsss_napari.train.seg import train_segmenter

# the network alone: the epithelium prior (tested in test_epithelium.py) reweights tissue
CPU = CamParams(device="cpu", epithelium=0.0)


@pytest.fixture(scope="module")
def seg_model(tmp_path_factory):
    """A tiny SegNet trained for a few seconds on synthetic patches and their true masks."""
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("seg_predict")
    data = write_patch_dataset(root / "patches", 16, size=64, seed=3)
    params = TrainSegParams(encoder="test_resnet", epochs=2, batch_size=8, crop_size=32,
                            val_fraction=0.0, seed=1, device="cpu")
    path = run_to_end(train_segmenter(data, data / "masks", root / "seg.safetensors", params))
    return load_model(path)


@pytest.fixture(scope="module")
def tissue():
    """(rgb, mask) 64 x 192: tumor, stroma, then normal and glass side by side."""
    parts = [make_tissue(64, 64, seed=s) for s in (2, 3, 5)]
    return (np.concatenate([p[0] for p in parts], axis=1),
            np.concatenate([p[1] for p in parts], axis=1))


def _single_window_labels(model, crop: np.ndarray) -> np.ndarray:
    import torch

    with torch.inference_mode():
        x = torch.from_numpy(crop).permute(2, 0, 1)[None]
        label = model(model.normalize(x))[0].argmax(0).numpy().astype(np.uint8)
    return label


def test_an_image_of_one_window_is_exactly_one_forward_pass(seg_model, tissue):
    crop = np.ascontiguousarray(tissue[0][:32, :32])
    assert np.array_equal(predict_mask(seg_model, crop, CPU), _single_window_labels(seg_model,
                                                                                     crop))


def test_two_copies_of_a_crop_get_the_same_labels(seg_model, tissue):
    """Windows of the training size: a copy's labels do not depend on the image around it."""
    rgb = tissue[0][:, 32:96]  # tumor | stroma
    doubled = np.concatenate([rgb, rgb], axis=1)  # (64, 128)
    pred = predict_mask(seg_model, doubled, CPU)
    left, right = pred[:, :64], pred[:, 64:]
    assert np.mean(left == right) > 0.9
    alone = predict_mask(seg_model, rgb, CPU)
    assert np.mean(left == alone) > 0.9


def test_sizes_that_are_not_a_window_multiple_work(seg_model, tissue):
    rgb, gt = tissue
    full = predict_mask(seg_model, rgb, CPU)
    for h, w in ((50, 150), (33, 95), (20, 25)):  # 20 x 25: smaller than one window
        pred = predict_mask(seg_model, rgb[:h, :w], CPU)
        assert pred.shape == (h, w) and pred.dtype == np.uint8 and pred.max() <= 3
        if min(h, w) >= 32:  # windows differ only near the cut edge
            assert np.mean(pred == full[:h, :w]) > 0.8
    assert len(np.unique(full)) >= 2  # not a constant model: the checks above mean something


def test_probabilities_are_normalised_and_background_mask_is_authoritative(seg_model, tissue):
    rgb, _ = tissue
    prob = seg_probabilities(seg_model, rgb[:50, :77], CPU)
    assert prob.shape == (4, 50, 77)
    np.testing.assert_allclose(prob.sum(0), 1.0, atol=1e-4)
    # with flip averaging (and a symmetric window grid: 80 = 32 + 3 * 16) the prediction of
    # a mirrored image is the mirrored prediction
    flip = CPU.replace(flip=True)
    mirrored = seg_probabilities(seg_model, np.ascontiguousarray(rgb[:50, 79::-1]), flip)
    np.testing.assert_allclose(mirrored[:, :, ::-1],
                               seg_probabilities(seg_model, rgb[:50, :80], flip), atol=1e-4)
    bg = np.zeros((50, 77), np.uint8)
    bg[:10] = 1
    pred = predict_mask(seg_model, rgb[:50, :77], CPU, background=bg)
    assert (pred[:10] == 3).all() and not (pred[10:] == 3).any()


def test_window_weight_peaks_in_the_centre():
    w = window_weight(32)
    assert w.shape == (32, 32) and w.min() > 0
    assert w[15:17, 15:17].min() > 0.99 and w[0, 0] < 0.2
    np.testing.assert_allclose(w, w.T)
