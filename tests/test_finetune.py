"""Fine-tuning learns from corrections in the background, obeys pause/stop, saves versions."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from wsss_napari import WsssError
from wsss_napari.device import DEVICE_LOCK
from wsss_napari.models import ModelConfig, build_model, file_hash, load_model, save_model
from wsss_napari.models.versioning import list_versions, save_version
from wsss_napari.params import FinetuneParams
from wsss_napari.sample.synth import make_tissue
from wsss_napari.train.finetune import FinetuneControl, finetune, run_finetune

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def sample():
    """A synthetic image whose left half the 'pathologist' has corrected."""
    img, m = make_tissue(192, 192, seed=3)
    labels = np.full_like(m, 255)
    labels[:, :96] = m[:, :96]
    return img, labels


def _model(kind="cam"):
    arch = "camnet" if kind == "cam" else "deeplabv3plus"
    return build_model(ModelConfig(kind=kind, arch=arch, backbone="test_resnet",
                                   input_size=64)).eval()


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("kind", ["cam", "seg"])
def test_loss_decreases_and_the_original_is_untouched(sample, kind):
    model = _model(kind)
    before = _state(model)
    params = FinetuneParams(steps=20, batch_size=4, crop_size=64, lr=3e-3)
    ticks = []
    gen = finetune(model, [sample], params)
    try:
        while True:
            ticks.append(next(gen))
    except StopIteration as stop:
        result = stop.value
    assert [t.done for t in ticks] == list(range(1, 21))
    assert all(t.stage == "finetune" and t.total == 20 and "loss" in t.info for t in ticks)
    assert result.steps_done == 20 and not result.stopped
    losses = result.losses
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert result.model is not model and not result.model.training
    changed = [k for k, v in result.model.state_dict().items()
               if v.is_floating_point() and not torch.equal(before[k], v)]
    assert changed
    # batch-norm statistics of the original training are kept
    assert all(torch.equal(before[k], result.model.state_dict()[k])
               for k in before if k.endswith(("running_mean", "running_var")))
    assert result.data["labelled_pixels"] == {
        n: int((sample[1] == i).sum()) for i, n in enumerate(["tumor", "stroma", "normal",
                                                              "background"])
        if (sample[1] == i).any()}


class _Runner(threading.Thread):
    """Drives the generator from a background thread, as the napari worker does."""

    def __init__(self, gen):
        super().__init__(daemon=True)
        self.gen, self.ticks, self.result, self.error = gen, [], None, None

    def run(self):
        try:
            while True:
                self.ticks.append(next(self.gen))
        except StopIteration as stop:
            self.result = stop.value
        except BaseException as err:  # noqa: BLE001 - re-raised in the test thread
            self.error = err


def _wait(pred, timeout=30.0):
    end = time.monotonic() + timeout
    while not pred() and time.monotonic() < end:
        time.sleep(0.01)
    return pred()


def test_pause_resume_and_stop_from_another_thread(sample):
    model = _model()
    before = _state(model)
    control = FinetuneControl()
    runner = _Runner(finetune(model, [sample], FinetuneParams(steps=100_000, batch_size=4,
                                                              crop_size=64), control))
    runner.start()
    assert _wait(lambda: len(runner.ticks) >= 2)
    control.pause()
    assert _wait(lambda: runner.ticks[-1].info.get("paused"))
    n = len(runner.ticks)
    steps = runner.ticks[-1].done
    # while paused: no progress, and the device lock is free for inference
    time.sleep(0.3)
    assert len(runner.ticks) == n
    assert DEVICE_LOCK.acquire(timeout=5)
    DEVICE_LOCK.release()
    control.resume()
    assert _wait(lambda: runner.ticks[-1].done >= steps + 2)
    control.stop()
    runner.join(timeout=10)  # stop acts between the crops of a step
    assert not runner.is_alive() and runner.error is None
    res = runner.result
    assert res.stopped and 0 < res.steps_done < 100_000
    assert len(res.losses) == res.steps_done
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_bad_inputs_are_clear_errors(sample):
    model = _model()
    img, _ = sample
    with pytest.raises(WsssError, match="paint some corrections"):
        run_finetune(model, [(img, np.full(img.shape[:2], 255, np.uint8))])
    with pytest.raises(WsssError, match="labels must be uint8"):
        run_finetune(model, [(img, np.zeros((5, 5), np.uint8))])
    with pytest.raises(WsssError, match="CAM or segmentation model"):
        run_finetune(torch.nn.Linear(2, 2), [sample])


def test_crops_larger_than_the_image_are_padded(sample):
    img, lab = sample
    res = run_finetune(_model(), [(img[:40, :50], lab[:40, :50])],
                       FinetuneParams(steps=2, batch_size=2, crop_size=64))
    assert res.steps_done == 2 and np.isfinite(res.losses).all()


def test_versioned_checkpoints_record_their_parent(tmp_path, sample):
    parent_path = tmp_path / "cam.safetensors"
    parent_hash = save_model(_model(), parent_path)
    parent = load_model(parent_path)
    res = run_finetune(parent, [sample], FinetuneParams(steps=2, batch_size=2, crop_size=64))
    v1 = save_version(res.model, tmp_path / "models", parent.file_hash,
                      res.summary(slides=["case1.svs"]))
    assert v1.name == f"cam-v1-{file_hash(v1)[:8]}.safetensors"
    child = load_model(v1)
    assert child.config.parent_hash == parent_hash
    info = child.config.extra["finetune"]
    assert info["slides"] == ["case1.svs"] and info["steps"] == 2
    assert info["labelled_pixels"] == res.data["labelled_pixels"]
    assert info["params"]["crop_size"] == 64
    for k, v in res.model.state_dict().items():
        torch.testing.assert_close(child.state_dict()[k], v)
    v2 = save_version(child, tmp_path / "models", child.file_hash, {"steps": 0})
    versions = list_versions(tmp_path / "models")
    assert [(v.name, v.number) for v in versions] == [("cam", 1), ("cam", 2)]
    assert versions[1].path == v2 and versions[1].parent_hash == file_hash(v1)
    assert not [p for p in (tmp_path / "models").iterdir() if p.name.startswith(".")]
