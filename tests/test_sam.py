"""SAM: the step is the sharpness-aware one, BN statistics move once per step, AMP policy,
and train-cls / train-seg run with --optimizer sam."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from wsss_napari import WsssError
from wsss_napari.params import TrainClsParams, TrainSegParams
from wsss_napari.train.sam import SAM, LossScale, make_optimizer, sam_train_step


def _loss(w: torch.Tensor) -> torch.Tensor:
    # a non-quadratic bowl: its gradient differs between w and w + e
    return (w[0] ** 4) / 4 + 3 * w[1] ** 2 + w[0] * w[1]


def _grad(w: torch.Tensor) -> torch.Tensor:
    return torch.stack([w[0] ** 3 + w[1], 6 * w[1] + w[0]])


def test_one_step_is_w_minus_lr_grad_at_the_perturbed_point():
    w0 = torch.tensor([1.5, -0.7], dtype=torch.float64)
    lr, rho = 0.1, 0.3
    w = nn.Parameter(w0.clone())
    opt = SAM([w], torch.optim.SGD, rho=rho, lr=lr)
    holder = nn.Module()
    holder.w = w
    sam_train_step(holder, opt, lambda: _loss(w))

    g = _grad(w0)
    expected = w0 - lr * _grad(w0 + rho * g / g.norm())  # hand-computed SAM step
    plain_sgd = w0 - lr * g
    torch.testing.assert_close(w.detach(), expected)
    assert (w.detach() - plain_sgd).abs().max() > 1e-3  # not the plain SGD step


def test_step_with_closure_equals_the_two_step_api():
    w0 = torch.tensor([0.4, 1.1], dtype=torch.float64)
    a, b = nn.Parameter(w0.clone()), nn.Parameter(w0.clone())
    opt_a = SAM([a], torch.optim.SGD, rho=0.05, lr=0.2, momentum=0.9)
    opt_b = SAM([b], torch.optim.SGD, rho=0.05, lr=0.2, momentum=0.9)
    holder = nn.Module()
    holder.a = a
    for _ in range(3):
        sam_train_step(holder, opt_a, lambda: _loss(a))
        opt_b.zero_grad()
        _loss(b).backward()

        def closure():
            opt_b.zero_grad()
            loss = _loss(b)
            loss.backward()
            return loss

        opt_b.step(closure)
    torch.testing.assert_close(a.detach(), b.detach())


def test_batchnorm_running_stats_change_once_per_step():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Linear(6, 1))
    bn = model[1]
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    ref = nn.BatchNorm1d(6)  # what one forward pass would do to the statistics
    ref.load_state_dict(bn.state_dict())
    with torch.no_grad():
        ref(model[0](x))
    opt = make_optimizer(model, "sam", lr=0.1, rho=0.5)
    sam_train_step(model, opt, lambda: ((model(x) - y) ** 2).mean())
    torch.testing.assert_close(bn.running_mean, ref.running_mean)
    torch.testing.assert_close(bn.running_var, ref.running_var)
    assert int(bn.num_batches_tracked) == 1
    assert bn.momentum == 0.1  # restored after pass 2


def test_amp_policy_skips_the_whole_step_on_an_overflow():
    w = nn.Parameter(torch.tensor([1.0, 2.0]))
    holder = nn.Module()
    holder.w = w
    opt = SAM([w], torch.optim.SGD, rho=0.05, lr=0.1)
    scale = LossScale(init=1024.0)
    calls = []

    def overflow_in_pass_two():
        calls.append(1)
        return (w ** 2).sum() * (float("inf") if len(calls) == 2 else 1.0)

    _, stepped = sam_train_step(holder, opt, overflow_in_pass_two, scale)
    assert not stepped and scale.scale == 512.0 and scale.skipped == 1
    torch.testing.assert_close(w.detach(), torch.tensor([1.0, 2.0]))  # restored, not stepped

    _, stepped = sam_train_step(holder, opt, lambda: (w ** 2).sum(), scale)
    assert stepped and w.detach()[0] < 1.0  # a clean scaled step moves; grads were unscaled
    g = 2 * torch.tensor([1.0, 2.0])
    e = 0.05 * g / g.norm()
    torch.testing.assert_close(w.detach(), torch.tensor([1.0, 2.0]) - 0.1 * 2 * (
        torch.tensor([1.0, 2.0]) + e))


def test_sam_state_dict_is_the_base_optimizers():
    model = nn.Linear(3, 2)
    opt = make_optimizer(model, "sam-adamw", lr=1e-3, rho=0.1)
    assert isinstance(opt, SAM) and isinstance(opt.base_optimizer, torch.optim.AdamW)
    x = torch.randn(4, 3)
    sam_train_step(model, opt, lambda: model(x).pow(2).mean())
    state = opt.state_dict()
    fresh = make_optimizer(model, "sam-adamw", lr=1e-3, rho=0.1)
    fresh.load_state_dict(state)
    for g in fresh.param_groups:
        g["lr"] = 5e-4
    assert fresh.base_optimizer.param_groups[0]["lr"] == 5e-4  # schedule reaches the base


def test_bad_optimizer_names_and_rho_are_clear_errors():
    with pytest.raises(WsssError, match="optimizer must be one of"):
        TrainClsParams(optimizer="lion")
    with pytest.raises(WsssError, match="optimizer must be one of"):
        TrainSegParams(optimizer="sam2")
    with pytest.raises(WsssError, match="sam_rho"):
        TrainClsParams(sam_rho=0.0)


def test_train_cls_and_seg_run_with_sam(tmp_path):
    from wsss_napari.cli import main
    from wsss_napari.models.checkpoint import load_model
    from wsss_napari.sample.synth import write_patch_dataset

    patches = write_patch_dataset(tmp_path / "p", 8, size=48, seed=3)
    out = tmp_path / "cam.safetensors"
    rc = main(["train-cls", str(patches), "--out", str(out), "--backbone", "test_resnet",
               "--no-pretrained",
               "--epochs", "1", "--batch-size", "4", "--crop-size", "32", "--val-fraction", "0",
               "--optimizer", "sam", "--sam-rho", "0.1", "--device", "cpu"])
    assert rc == 0
    train = load_model(out).config.extra["train"]
    assert train["optimizer"] == "sam" and train["sam_rho"] == 0.1

    from wsss_napari.progress import run_to_end
    from wsss_napari.train.seg import train_segmenter

    seg = tmp_path / "seg.safetensors"
    params = TrainSegParams(encoder="test_resnet", epochs=1, batch_size=4, crop_size=32,
                            val_fraction=0.0, optimizer="sam-adamw", lr=1e-3, device="cpu")
    run_to_end(train_segmenter(patches, patches / "masks", seg, params))
    assert load_model(seg).config.extra["train"]["optimizer"] == "sam-adamw"
