"""Stage-1 training: a tiny real run, checkpoints, resume, the CLI and its bad-input choice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from wsss_napari import WsssError
from wsss_napari.cli import main
from wsss_napari.models.checkpoint import load_model
from wsss_napari.params import TrainClsParams
from wsss_napari.progress import run_to_end
from wsss_napari.sample.synth import write_patch_dataset
from wsss_napari.train.cls import pos_weight, train_classifier
from wsss_napari.train.loop import state_path

TINY = TrainClsParams(backbone="test_resnet", pretrained=False, epochs=2, batch_size=8,
                      crop_size=48,
                      cutmix=0.5, mosaic=0.5, val_fraction=0.2, seed=1)


@pytest.fixture(scope="module")
def patches(tmp_path_factory) -> Path:
    return write_patch_dataset(tmp_path_factory.mktemp("patches"), 24, size=64, seed=5)


def test_pos_weight_is_sqrt_of_negative_to_positive_ratio():
    labels = np.array([[1, 0, 0], [1, 1, 0], [1, 0, 0], [0, 1, 0]], np.float32)
    np.testing.assert_allclose(pos_weight(labels), [np.sqrt(1 / 3), 1.0, 1.0], rtol=1e-6)


def test_two_epochs_make_a_loadable_cam_model(patches, tmp_path):
    out = tmp_path / "cam.safetensors"
    ticks = []
    gen = train_classifier(patches, out, TINY)
    result = run_to_end(_collect(gen, ticks))
    assert result == out
    model = load_model(out)
    assert model.config.kind == "cam" and model.config.backbone == "test_resnet"
    assert model.config.input_size == 48
    hist = model.config.extra["history"]
    assert [h["epoch"] for h in hist] == [1, 2]
    assert "val_mean_ap" in hist[-1] and np.isfinite(hist[-1]["loss"])
    assert ticks[-1].done == ticks[-1].total
    assert all("loss" in t.info for t in ticks)
    with torch.inference_mode():
        logits = model(torch.zeros(1, 3, 48, 48))
    assert logits.shape == (1, 3)


def test_resume_continues_from_the_last_finished_epoch(patches, tmp_path):
    straight = tmp_path / "straight.safetensors"
    run_to_end(train_classifier(patches, straight, TINY))

    resumed = tmp_path / "resumed.safetensors"
    gen = train_classifier(patches, resumed, TINY)
    for tick in gen:  # interrupt right after the first epoch's checkpoint
        if "val_mean_ap" in tick.info:
            gen.close()
            break
    assert state_path(resumed).is_file()
    ticks = []
    run_to_end(_collect(train_classifier(patches, resumed, TINY, resume=True), ticks))
    assert {t.info["epoch"] for t in ticks} == {2}  # only the second epoch ran
    a, b = load_model(straight).state_dict(), load_model(resumed).state_dict()
    for k in a:  # same seeds, same batches: identical to an uninterrupted run
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    assert [h["epoch"] for h in load_model(resumed).config.extra["history"]] == [1, 2]


def test_resume_without_state_is_a_clear_error(patches, tmp_path):
    with pytest.raises(WsssError, match="cannot resume"):
        run_to_end(train_classifier(patches, tmp_path / "x.safetensors", TINY, resume=True))


def test_cli_synthetic_and_on_bad_stop(tmp_path, capsys):
    data = tmp_path / "synth"
    out = tmp_path / "m.safetensors"
    rc = main(["train-cls", str(data), "--synthetic", "12", "--out", str(out),
               "--backbone", "test_resnet", "--no-pretrained", "--epochs", "1", "--batch-size", "6",
               "--crop-size", "32", "--half"])
    assert rc == 0 and out.is_file() and not state_path(out).exists()
    model = load_model(out)
    assert model.config.mpp == 0.5  # sample.synth resolution recorded
    assert "sample.synth" in model.config.extra["data"]

    (data / "broken-[1, 0, 0].png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    rc = main(["train-cls", str(data), "--out", str(tmp_path / "m2.safetensors"),
               "--backbone", "test_resnet", "--no-pretrained", "--epochs", "1",
               "--on-bad", "stop"])
    err = capsys.readouterr().err
    assert rc == 2 and "broken-[1, 0, 0].png" in err and "--on-bad skip" in err
    assert not (tmp_path / "m2.safetensors").exists()


def _collect(gen, ticks):
    while True:
        try:
            t = next(gen)
        except StopIteration as stop:
            return stop.value
        ticks.append(t)
        yield t
