"""Pieces shared by the training loops: seeds, learning-rate schedule, device setup, and the
resumable training state.

The training state lives in a sidecar ``<model>.state.safetensors`` beside the model: the
model weights, the optimizer's tensors, and in its header the finished epoch count, the seed,
the parameters and the history. It is plain safetensors (nothing unpickled), written
atomically after each epoch, so an interrupted run resumes from its last finished epoch.
Randomness of epoch ``e`` is derived from ``(seed, e)``, so a resumed run draws the same
crops and batches as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
from pathlib import Path
from typing import Any

import numpy as np

from .. import WsssError

STATE_SUFFIX = ".state.safetensors"
#: Steps between host reads of the loss (divergence check, the loss shown in progress).
LOG_EVERY = 10


def state_path(model_path: str | Path) -> Path:
    """Sidecar training-state file of a model file."""
    p = Path(model_path)
    name = p.name.removesuffix(".safetensors")
    return p.with_name(name + STATE_SUFFIX)


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (CPU and CUDA)."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_rng(seed: int, epoch: int, index: int = -1) -> np.random.Generator:
    """Generator for (seed, epoch[, item]): reproducible whatever ran before (resume-safe)."""
    key = [seed, epoch] if index < 0 else [seed, epoch, index]
    return np.random.default_rng(key)


def poly_lr(base_lr: float, step: int, total_steps: int, power: float = 0.9) -> float:
    """Polynomial decay ``base * (1 - step / total) ** power``."""
    frac = min(max(step / max(total_steps, 1), 0.0), 1.0)
    return base_lr * (1.0 - frac) ** power


def setup_device(preference: str, amp: bool):
    """(torch.device, use_amp): AMP only on CUDA."""
    from ..device import choose_device

    dev = choose_device(preference)
    return dev, bool(amp and dev.type == "cuda")


def autocast(device, enabled: bool):
    """Mixed-precision context on CUDA, a no-op elsewhere."""
    import torch

    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.float16)


def make_loader(dataset, batch_size: int, shuffle: bool, seed: int, epoch: int, workers: int,
                drop_last: bool = False):
    """A DataLoader whose shuffle order depends only on (seed, epoch); each worker process
    runs one intra-op thread (``device.worker_init_threads``)."""
    import torch

    from ..device import worker_init_threads

    g = torch.Generator()
    g.manual_seed(int(seed) * 1000 + int(epoch))
    n = len(dataset)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=min(batch_size, max(n, 1)),
        shuffle=shuffle,
        generator=g,
        num_workers=workers,
        worker_init_fn=worker_init_threads if workers else None,
        drop_last=drop_last and n > batch_size,
        pin_memory=False,
        persistent_workers=False,
    )


def save_train_state(path: str | Path, model, optimizer, epoch: int, meta: dict[str, Any]
                     ) -> Path:
    """Write the resumable state (weights + optimizer tensors + JSON meta) atomically."""
    from safetensors.torch import save_file

    from ..io.atomic import atomic_path

    tensors = {f"model.{k}": v.detach().cpu().contiguous().clone()
               for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    for idx, st in opt["state"].items():
        for name, v in st.items():
            if hasattr(v, "detach"):
                tensors[f"optim.{idx}.{name}"] = v.detach().cpu().contiguous().clone()
    header = {
        "epoch": str(int(epoch)),
        "param_groups": json.dumps(opt["param_groups"]),
        "meta": json.dumps(meta),
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=header)
    return Path(path)


def load_train_state(path: str | Path, model, optimizer) -> tuple[int, dict[str, Any]]:
    """Restore weights and optimizer from :func:`save_train_state`; return (epoch, meta).

    Raises:
        WsssError: missing, corrupt, or from a different model.
    """
    from safetensors import SafetensorError, safe_open

    p = Path(path)
    if not p.is_file():
        raise WsssError(f"cannot resume: no training state '{p}' (train without --resume)")
    try:
        with safe_open(str(p), framework="pt") as fh:
            header = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as err:
        raise WsssError(f"cannot resume: training state '{p}' is corrupt ({err})") from err
    try:
        epoch = int(header["epoch"])
        groups = json.loads(header["param_groups"])
        meta = json.loads(header["meta"])
    except (KeyError, ValueError) as err:
        raise WsssError(f"cannot resume: training state '{p}' lacks its header ({err})") from err
    weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        raise WsssError(f"cannot resume: '{p}' holds a different model "
                        f"(other backbone or classes?): {str(err)[:300]}") from err
    state: dict[int, dict[str, Any]] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, idx, name = k.split(".", 2)
            state.setdefault(int(idx), {})[name] = v
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError) as err:
        raise WsssError(f"cannot resume: optimizer state in '{p}' does not fit: {err}") from err
    return epoch, meta


def average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """Average precision of one class (NaN without positives)."""
    pos = targets.sum()
    if pos == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    t = targets[order]
    tp = np.cumsum(t)
    precision = tp / np.arange(1, len(t) + 1)
    return float((precision * t).sum() / pos)


def multilabel_metrics(probs: np.ndarray, targets: np.ndarray, names: tuple[str, ...],
                       threshold: float = 0.5) -> dict[str, float]:
    """Per-class F1 and AP, their means, and exact-match accuracy of multi-label predictions."""
    pred = probs >= threshold
    out: dict[str, float] = {}
    f1s, aps = [], []
    for c, name in enumerate(names):
        t = targets[:, c] > 0.5
        tp = float(np.sum(pred[:, c] & t))
        fp = float(np.sum(pred[:, c] & ~t))
        fn = float(np.sum(~pred[:, c] & t))
        f1 = 2 * tp / (2 * tp + fp + fn) if (tp + fp + fn) else float("nan")
        ap = average_precision(probs[:, c], t.astype(np.float64))
        out[f"f1_{name}"], out[f"ap_{name}"] = f1, ap
        f1s.append(f1)
        aps.append(ap)
    out["mean_f1"] = float(np.nanmean(f1s)) if not np.all(np.isnan(f1s)) else float("nan")
    out["mean_ap"] = float(np.nanmean(aps)) if not np.all(np.isnan(aps)) else float("nan")
    out["exact_match"] = float(np.mean(np.all(pred == (targets > 0.5), axis=1)))
    return out


def fit_epochs(stage: str, model, train_set, params, optimizer, loss_fn, *, out, device,
               use_amp: bool, start_epoch: int, history: list[dict[str, Any]],
               steps_per_epoch: int, evaluate=None, compute_loss=None):
    """The epoch loop shared by the classification and segmentation trainers.

    Poly learning-rate decay per step, AMP and channels_last on CUDA, a divergence check
    every :data:`LOG_EVERY` steps and per epoch (the loss is accumulated on the device, so
    the host waits for the GPU once per interval, not three times per step), one
    :class:`~wsss_napari.progress.Progress` per step (the last read loss, lr) and per epoch
    (the history record, validation included), and after every epoch the model and the
    resumable training state written atomically. ``loss_fn(logits, y)`` gives the loss;
    ``evaluate(model)`` returns validation metrics or is ``None``. ``compute_loss(model, x,
    y, step)`` (``x`` normalised) replaces ``loss_fn(model(x), y)`` when the loss needs more
    than the logits (Puzzle-CAM).
    """
    import torch

    from ..progress import Progress
    from .sam import SAM, LossScale

    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    # False: not SAM; None: SAM in fp32; a LossScale: SAM under AMP (see train.sam)
    sam_scale = (LossScale() if use_amp else None) if isinstance(optimizer, SAM) else False
    total = steps_per_epoch * params.epochs
    step = start_epoch * steps_per_epoch
    for epoch in range(start_epoch, params.epochs):
        train_set.epoch = epoch
        loader = make_loader(train_set, params.batch_size, True, params.seed, epoch,
                             params.workers, drop_last=True)
        # losses stay on the device; the host reads them once per LOG_EVERY steps (a
        # .item() per step would make the CPU wait for the GPU at every step)
        running = torch.zeros((), device=device)
        n_seen, last_loss, since_log = 0, float("nan"), LOG_EVERY - 1  # log step 1
        for x, y in loader:
            lr = poly_lr(params.lr, step, total)
            loss, n = _train_step(model, optimizer, scaler, sam_scale, loss_fn, compute_loss,
                                  x, y, lr, device=device, use_amp=use_amp, epoch=epoch,
                                  step=step)
            step += 1
            running += loss.detach() * n
            n_seen += n
            since_log += 1
            if since_log >= LOG_EVERY or step == total:
                last_loss = float(loss.detach())  # the one host sync of the interval
                since_log = 0
                if not math.isfinite(last_loss):
                    raise WsssError(f"training diverged (loss {last_loss}) at epoch "
                                    f"{epoch + 1}; lower --lr")
            yield Progress(stage, step, total,
                           {"epoch": epoch + 1, "loss": round(last_loss, 4), "lr": lr})
        record = _end_epoch(model, optimizer, params, out, epoch, float(running) / max(n_seen, 1),
                            history, evaluate)
        info = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in record.items()}
        yield Progress(stage, step, total, info)
    return out


def _train_step(model, optimizer, scaler, sam_scale, loss_fn, compute_loss, x, y, lr: float,
                *, device, use_amp: bool, epoch: int, step: int):
    """One optimisation step (plain, or SAM's two passes); returns (the loss on the device,
    the batch size), so the epoch loop only counts and reports."""
    import torch

    from .sam import sam_train_step

    for g in optimizer.param_groups:
        g["lr"] = lr
    x = x.to(device, non_blocking=True)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    y = y.to(device, non_blocking=True)
    if sam_scale is not False:  # SAM: two forward-backward passes (train.sam)
        loss, _ = sam_train_step(model, optimizer, _sam_closure(
            model, loss_fn, x, y, device, use_amp, epoch, compute_loss, step), sam_scale)
        return loss, len(x)
    with autocast(device, use_amp):
        if compute_loss is not None:
            loss = compute_loss(model, model.normalize(x), y, step)
        else:
            loss = loss_fn(model(model.normalize(x)).float(), y)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss, len(x)


def _end_epoch(model, optimizer, params, out, epoch: int, epoch_loss: float,
               history: list[dict[str, Any]], evaluate) -> dict[str, Any]:
    """Check the epoch's mean loss, validate, and write the model and the resumable state
    (what makes a run resumable after every epoch); returns the epoch's history record."""
    from ..models.checkpoint import save_model

    if not math.isfinite(epoch_loss):
        raise WsssError(f"training diverged (loss {epoch_loss}) at epoch {epoch + 1}; "
                        "lower --lr")
    record: dict[str, Any] = {"epoch": epoch + 1, "loss": epoch_loss}
    if evaluate is not None:
        record.update({f"val_{k}": v for k, v in evaluate(model).items()})
    history.append(record)
    model.config = model.config.replace(extra={**model.config.extra, "history": history})
    save_model(model, out)
    save_train_state(state_path(out), model, optimizer, epoch + 1,
                     {"params": params.to_dict(), "history": history, "seed": params.seed})
    return record


def _check_finite(loss, epoch: int) -> None:
    if not math.isfinite(loss.item()):
        raise WsssError(f"training diverged (loss {loss.item()}) at epoch {epoch + 1}; "
                        "lower --lr")


def _sam_closure(model, loss_fn, x, y, device, use_amp: bool, epoch: int,
                 compute_loss=None, step: int = 0):
    """Forward pass + loss for :func:`~wsss_napari.train.sam.sam_train_step` (called twice)."""

    def forward_loss():
        with autocast(device, use_amp):
            if compute_loss is not None:  # e.g. the Puzzle-CAM loss (train.puzzle)
                loss = compute_loss(model, model.normalize(x), y, step).float()
            else:
                loss = loss_fn(model(model.normalize(x)).float(), y)
        if not use_amp:  # under AMP an overflow skips the step instead (train.sam)
            _check_finite(loss, epoch)
        return loss

    return forward_loss


def resume_state(out: Path, model, optimizer) -> tuple[int, list[dict[str, Any]], dict[str, Any]]:
    """Load the state beside the model file ``out`` into ``model`` and ``optimizer``; return
    (finished epochs, history, the state's meta): where an interrupted run continues."""
    start_epoch, meta = load_train_state(state_path(out), model, optimizer)
    return start_epoch, list(meta.get("history", [])), meta


def epoch_steps(train_set, params) -> int:
    """Optimisation steps in one epoch (the training loader drops the last partial batch)."""
    return len(make_loader(train_set, params.batch_size, True, params.seed, 0, 0,
                           drop_last=True))


def prepare_training(params, items, val_items, build, extra_meta=None):
    """Split, seed, choose the device and build the model, the same way for every trainer.

    ``build(params)`` makes the model; its config records the parameters, the split sizes and
    ``extra_meta``. Returns ``(train_items, val_items, model, device, use_amp)`` with the model
    on the device in training mode.
    """
    import torch

    from .data import split_items

    if val_items is None:
        train_items, val_items = split_items(items, params.val_fraction, params.seed)
    else:
        train_items, val_items = items, list(val_items)
    seed_everything(params.seed)
    device, use_amp = setup_device(params.device, params.amp)
    model = build(params)
    extra = {"train": params.to_dict(), "n_train": len(train_items), "n_val": len(val_items),
             **(extra_meta or {})}
    model.config = model.config.replace(extra={**model.config.extra, **extra})
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    model.train()
    return train_items, val_items, model, device, use_amp
