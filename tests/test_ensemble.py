"""Segmentation ensembles: several train-seg models as one file, predicting their mean."""

from __future__ import annotations

import numpy as np
import pytest

from wsss_napari import WsssError
from wsss_napari.cli import main
from wsss_napari.inference.predict import predict_mask, seg_probabilities
from wsss_napari.models.checkpoint import load_model, save_ensemble
from wsss_napari.models.ensemble import MEMBERS_KEY, ensemble_size
from wsss_napari.params import CamParams, TrainSegParams
from wsss_napari.progress import run_to_end
from wsss_napari.sample.synth import make_tissue, write_patch_dataset
from wsss_napari.train.seg import train_segmenter

# the network alone: the epithelium prior (tested in test_epithelium.py) reweights tissue
CPU = CamParams(device="cpu", epithelium=0.0)


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    """Two tiny SegNets trained on the same synthetic patches with different seeds."""
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("ensemble")
    data = write_patch_dataset(root / "patches", 16, size=64, seed=3)
    paths = []
    for seed in (1, 2):
        params = TrainSegParams(encoder="test_resnet", epochs=1, batch_size=8, crop_size=32,
                                val_fraction=0.0, seed=seed, device="cpu")
        paths.append(run_to_end(train_segmenter(data, data / "masks",
                                                root / f"seg{seed}.safetensors", params)))
    return paths


@pytest.fixture(scope="module")
def tissue():
    parts = [make_tissue(64, 64, seed=s) for s in (2, 3, 5)]
    return np.concatenate([p[0] for p in parts], axis=1)


def test_an_ensemble_file_predicts_the_mean_of_its_members(members, tissue, tmp_path):
    out = tmp_path / "ens.safetensors"
    assert main(["ensemble", *map(str, members), "--out", str(out)]) == 0
    ens = load_model(out)
    assert ensemble_size(ens.config) == 2
    a, b = (load_model(p) for p in members)
    assert [m["sha256"] for m in ens.config.extra[MEMBERS_KEY]] == [a.file_hash, b.file_hash]
    pa, pb = seg_probabilities(a, tissue, CPU), seg_probabilities(b, tissue, CPU)
    pe = seg_probabilities(ens, tissue, CPU)
    assert not np.allclose(pa, pb, atol=1e-3)  # the seeds really differ
    np.testing.assert_allclose(pe, (pa + pb) / 2, atol=1e-5)
    # the whole predict path takes it like any segmentation model
    mask = predict_mask(ens, tissue, CPU)
    assert mask.shape == tissue.shape[:2]
    assert np.array_equal(mask, np.argmax(pe, axis=0).astype(np.uint8))


def test_only_compatible_segmentation_models_are_ensembled(members, tmp_path):
    import dataclasses

    from wsss_napari.models.checkpoint import save_model

    one = load_model(members[0])
    with pytest.raises(WsssError, match="at least two"):
        save_ensemble(members[:1], tmp_path / "one.safetensors")
    other = load_model(members[1])
    other.config = dataclasses.replace(other.config, input_size=64)
    save_model(other, tmp_path / "big.safetensors")
    with pytest.raises(WsssError, match="input_size"):
        save_ensemble([members[0], tmp_path / "big.safetensors"], tmp_path / "x.safetensors")
    ens_path = tmp_path / "ens.safetensors"
    save_ensemble(members, ens_path)
    with pytest.raises(WsssError, match="already an ensemble"):
        save_ensemble([members[0], ens_path], tmp_path / "y.safetensors")
    assert not (tmp_path / "x.safetensors").exists()
    assert not (tmp_path / "y.safetensors").exists()
    assert one.config.kind == "seg"


def test_a_cam_model_is_refused_with_one_line(members, tmp_path, capsys):
    from wsss_napari.models.checkpoint import save_model
    from wsss_napari.models.config import ModelConfig
    from wsss_napari.models.registry import build_model

    cam = build_model(ModelConfig(kind="cam", arch="camnet", backbone="test_resnet",
                                  input_size=32))
    save_model(cam, tmp_path / "cam.safetensors")
    rc = main(["ensemble", str(members[0]), str(tmp_path / "cam.safetensors"),
               "--out", str(tmp_path / "e.safetensors")])
    assert rc == 2
    assert "only segmentation models" in capsys.readouterr().err
    assert not (tmp_path / "e.safetensors").exists()
