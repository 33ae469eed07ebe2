"""Fine-tune a CAM or segmentation model on the pathologist's corrections, in the background.

:func:`finetune` is a generator (one :class:`~wsss_napari.progress.Progress` per step, with
the loss) that a napari thread worker drives while the viewer stays responsive. It trains a
*deep copy* of the model: the original keeps serving inference and is untouched if the job
is stopped or fails. A :class:`FinetuneControl` pauses, resumes and stops it; the flags are
checked between the crops of a step too, so they act within a second even on a CPU.
``wsss_napari.device.DEVICE_LOCK`` is held only while the model computes (never while
paused), so inference and training take turns on the device instead of fighting over it.

Losses:

- CAM models (``CamNet``): per-pixel binary cross-entropy of the class maps (upsampled to
  the crop) against the one-hot pixel labels (background pixels: every class negative;
  ``255`` ignored), plus the image-level BCE of the logits against the classes present in
  the crop (absences count only where the crop is fully labelled). Grad-CAM models, whose
  maps need a backward pass themselves, learn from the image-level term only.
- Segmentation models (``SegNet``): cross-entropy over classes + background, ignoring 255.

Batch-norm layers stay in eval mode: a handful of corrected crops would otherwise overwrite
the running statistics learned from the whole training set.
"""

from __future__ import annotations

import copy
import math
import threading
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import WsssError
from ..classes import BACKGROUND, LABEL_NAMES
from ..models.config import model_kind
from ..params import FinetuneParams
from ..progress import Progress

IGNORE = 255
STAGE = "finetune"


class FinetuneControl:
    """Pause / resume / stop flags shared between the widget and a running :func:`finetune`.

    Thread-safe; call from any thread (the widget's buttons).
    """

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._running = threading.Event()
        self._running.set()

    def stop(self) -> None:
        """Stop at the next check (the current step is dropped)."""
        self._stop.set()
        self._running.set()

    def pause(self) -> None:
        """Pause at the next check; :meth:`resume` continues where it left off."""
        if not self._stop.is_set():
            self._running.clear()

    def resume(self) -> None:
        self._running.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    def wait_while_paused(self, timeout: float | None = None) -> bool:
        """Block while paused (up to ``timeout`` s); returns True when running again."""
        return self._running.wait(timeout)


class _Stopped(Exception):
    """Raised inside a step when the control asks to stop."""


@dataclass
class FinetuneResult:
    """What a fine-tuning run returns.

    Attributes:
        model: the fine-tuned copy (eval mode); the caller decides whether to keep it.
        losses: loss of each completed step.
        steps_done: completed optimisation steps.
        stopped: True when stopped early by :class:`FinetuneControl`.
        params: the parameters of the run.
        data: what it learned from: samples, labelled pixels per class (for the
            checkpoint's provenance, see :func:`wsss_napari.models.versioning.save_version`).
    """

    model: Any
    losses: list[float] = field(default_factory=list)
    steps_done: int = 0
    stopped: bool = False
    params: FinetuneParams = field(default_factory=FinetuneParams)
    data: dict[str, Any] = field(default_factory=dict)

    def summary(self, **extra: Any) -> dict[str, Any]:
        """Provenance dict for :func:`~wsss_napari.models.versioning.save_version`."""
        return {**self.data, "steps": self.steps_done, "stopped": self.stopped,
                "final_loss": self.losses[-1] if self.losses else None,
                "params": self.params.to_dict(), **extra}


def _trainable_copy(model: Any, device: Any) -> Any:
    """A deep copy of ``model`` on ``device`` in train mode, every parameter trainable, the
    batch-norm layers in eval mode (they keep the full training set's running statistics)."""
    import torch

    from ..device import DEVICE_LOCK

    with DEVICE_LOCK:
        work = copy.deepcopy(model).to(device)
    work.train()
    for m in work.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()
    for p in work.parameters():
        p.requires_grad_(True)
    return work


def _backward(work: Any, part: list, n_crops: int, loss_fn: Any, n_classes: int, device: Any,
              amp: bool, scaler: Any) -> Any:
    """Forward and backward of the crops ``part`` (of ``n_crops`` in the step), the loss
    scaled by their share of the step; returns the (unscaled) loss."""
    import torch

    from ..device import DEVICE_LOCK
    from .loop import autocast

    with DEVICE_LOCK:
        x = torch.from_numpy(np.stack([c[0] for c in part]))
        y = torch.from_numpy(np.stack([c[1] for c in part]).astype(np.int64))
        if device.type == "cuda":
            x, y = x.pin_memory(), y.pin_memory()
        x = x.to(device, non_blocking=True).permute(0, 3, 1, 2)
        x = work.normalize(x).contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            loss = loss_fn(work, x, y.to(device, non_blocking=True), n_classes)
        scaler.scale(loss.float() * len(part) / n_crops).backward()
    return loss


def finetune(model: Any, samples: Sequence[tuple[np.ndarray, np.ndarray]],
             params: FinetuneParams | None = None, control: FinetuneControl | None = None,
             ) -> Generator[Progress, None, FinetuneResult]:
    """Fine-tune a copy of ``model`` on labelled images; a generator of progress.

    Args:
        model: a ``CamNet`` / ``GradCamNet`` (``config.kind == 'cam'``) or ``SegNet``
            (``'seg'``); it is deep-copied, never modified.
        samples: ``(image uint8 (H, W, 3), labels uint8 (H, W))`` pairs: corrected pixels
            labelled 0..3, ``255`` where nothing is known. With ``params.pseudo_elsewhere``
            the caller fills unedited pixels with CAM pseudo-labels before calling.
        params: steps, learning rate (Adam), batch and crop size, seed, device.
        control: pause / resume / stop from another thread.

    Yields:
        ``Progress('finetune', step, steps, {'loss', 'lr', 'paused'})`` after every step,
        and once with ``paused=True`` when a pause begins.

    Returns:
        :class:`FinetuneResult` (``stopped=True`` if stopped early).

    Raises:
        WsssError: no labelled pixels, bad sample shapes or an unsupported model.
    """
    params = params or FinetuneParams()
    control = control or FinetuneControl()
    run = _prepare(model, samples, params)
    result = FinetuneResult(model=run.work, params=params, data={
        "samples": len(samples), "labelled_pixels": run.pixels})
    step = 0
    try:
        while step < params.steps:
            yield from _pause_point(control, step, params, result.losses)
            total = yield from _step(run, samples, params, control, step, result.losses)
            step += 1
            result.losses.append(total)
            result.steps_done = step
            yield Progress(STAGE, step, params.steps,
                           {"loss": total, "lr": params.lr, "paused": False})
    except _Stopped:
        result.stopped = True
    run.opt.zero_grad(set_to_none=True)
    run.work.eval()
    for p in run.work.parameters():
        p.requires_grad_(False)
    return result


@dataclass
class _Run:
    """What the steps of one fine-tuning run share (see :func:`_prepare`)."""

    work: Any
    opt: Any
    scaler: Any
    loss_fn: Any
    n_classes: int
    device: Any
    amp: bool
    micro: int
    weights: np.ndarray
    rng: np.random.Generator
    pixels: dict[str, int]


def _prepare(model: Any, samples: Sequence[tuple[np.ndarray, np.ndarray]],
             params: FinetuneParams) -> _Run:
    """Check the model and samples, seed, and make the trainable copy and its optimiser."""
    import torch

    from ..device import choose_device

    kind = model_kind(model)
    if kind not in ("cam", "seg"):
        raise WsssError("fine-tuning needs a wsss-napari CAM or segmentation model "
                        f"(a model with .config.kind 'cam' or 'seg'), not {type(model).__name__}")
    n_classes = model.config.num_classes
    data = _check_samples(samples, n_classes)
    device = choose_device(params.device)
    rng = np.random.default_rng(params.seed)
    torch.manual_seed(params.seed)
    work = _trainable_copy(model, device)
    opt = torch.optim.Adam(list(work.parameters()), lr=params.lr)
    cuda = device.type == "cuda"
    amp = cuda  # mixed precision and channels_last on CUDA, as in training
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    if cuda:
        work.to(memory_format=torch.channels_last)
    weights = np.array([d["labelled"] for d in data["per_sample"]], np.float64)
    return _Run(work=work, opt=opt, scaler=scaler,
                loss_fn=_seg_loss if kind == "seg" else _cam_loss, n_classes=n_classes,
                device=device, amp=amp,
                micro=params.batch_size if cuda else min(params.batch_size, 2),
                weights=weights / weights.sum(), rng=rng, pixels=data["pixels"])


def _step(run: _Run, samples: Sequence[tuple[np.ndarray, np.ndarray]], params: FinetuneParams,
          control: FinetuneControl, step: int,
          losses: list[float]) -> Generator[Progress, None, float]:
    """One optimisation step over ``params.batch_size`` random crops, in micro-batches
    (pausing between them); returns its loss. Raises :class:`_Stopped` when stopped."""
    import torch

    from ..device import DEVICE_LOCK

    crops = [_random_crop(samples, run.weights, params.crop_size, run.rng)
             for _ in range(params.batch_size)]
    run.opt.zero_grad(set_to_none=True)
    total_t = torch.zeros((), device=run.device)
    for i in range(0, len(crops), run.micro):
        part = crops[i:i + run.micro]
        yield from _pause_point(control, step, params, losses)  # between crops too
        loss = _backward(run.work, part, len(crops), run.loss_fn, run.n_classes, run.device,
                         run.amp, run.scaler)
        total_t += loss.detach().float() * len(part) / len(crops)
    if control.stopped:
        raise _Stopped
    with DEVICE_LOCK:
        run.scaler.step(run.opt)
        run.scaler.update()
    return float(total_t)  # one host sync per step (the loss the widget plots)


def _pause_point(control: FinetuneControl, step: int, params: FinetuneParams,
                 losses: list[float]) -> Generator[Progress, None, None]:
    """Wait here while paused (announcing it once, lock not held); raise if stopped."""
    if control.paused and not control.stopped:
        yield Progress(STAGE, step, params.steps,
                       {"paused": True, "lr": params.lr, "loss": _last(losses)})
        while not control.wait_while_paused(0.1):
            pass
    if control.stopped:
        raise _Stopped


def run_finetune(model: Any, samples: Sequence[tuple[np.ndarray, np.ndarray]],
                 params: FinetuneParams | None = None,
                 control: FinetuneControl | None = None) -> FinetuneResult:
    """Synchronous :func:`finetune` (scripts and tests)."""
    from ..progress import run_to_end

    return run_to_end(finetune(model, samples, params, control))


# ------------------------------------------------------------------------------ losses
def _cam_loss(model: Any, x: Any, y: Any, n_classes: int) -> Any:
    import torch
    from torch.nn import functional as F

    labelled = y != IGNORE
    onehot = torch.stack([(y == c) for c in range(n_classes)], dim=1).float()
    # image level: a class is present if any labelled pixel has it; absent only if the crop
    # is fully labelled (unlabelled pixels may hide it)
    present = onehot.amax(dim=(2, 3))
    full = labelled.flatten(1).all(dim=1, keepdim=True).float()
    img_w = torch.maximum(present, full.expand_as(present))
    if getattr(model, "needs_grad", False):
        logits = model(x)
        return F.binary_cross_entropy_with_logits(logits, present, weight=img_w)
    maps = model.class_maps(x)
    logits = maps.float().mean(dim=(2, 3))
    img_loss = F.binary_cross_entropy_with_logits(logits, present, weight=img_w)
    up = F.interpolate(maps.float(), size=y.shape[-2:], mode="bilinear", align_corners=False)
    pix_w = labelled.unsqueeze(1).float().expand_as(up)
    pix = F.binary_cross_entropy_with_logits(up, onehot, weight=pix_w, reduction="sum")
    pix = pix / pix_w.sum().clamp_min(1.0)
    return pix + img_loss


def _seg_loss(model: Any, x: Any, y: Any, n_classes: int) -> Any:
    from torch.nn import functional as F

    # labels 0..C-1 are classes, BACKGROUND is the extra last channel
    target = y.clone()
    if BACKGROUND != n_classes:
        target[y == BACKGROUND] = n_classes
    logits = model(x)
    return F.cross_entropy(logits.float(), target, ignore_index=IGNORE)


# ------------------------------------------------------------------------------ data
def _check_samples(samples: Sequence[tuple[np.ndarray, np.ndarray]],
                   n_classes: int) -> dict[str, Any]:
    if not samples:
        raise WsssError("nothing to fine-tune on: paint some corrections first")
    counts = np.zeros(256, np.int64)
    per = []
    for i, pair in enumerate(samples):
        if len(pair) != 2:
            raise WsssError(f"fine-tuning sample {i} must be (image, labels)")
        img, lab = pair
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise WsssError(f"fine-tuning sample {i}: image must be uint8 (H, W, 3), "
                            f"got {img.dtype} {img.shape}")
        if lab.shape != img.shape[:2] or lab.dtype != np.uint8:
            raise WsssError(f"fine-tuning sample {i}: labels must be uint8 {img.shape[:2]}, "
                            f"got {lab.dtype} {lab.shape}")
        c = np.bincount(lab.ravel(), minlength=256)
        bad = [v for v in np.flatnonzero(c) if v > max(n_classes, BACKGROUND) and v != IGNORE]
        if bad:
            raise WsssError(f"fine-tuning sample {i}: unknown label values {bad}")
        counts += c
        per.append({"labelled": int(c[:IGNORE].sum())})
    if counts[:IGNORE].sum() == 0:
        raise WsssError("nothing to fine-tune on: no labelled pixels in the samples "
                        "(paint some corrections first)")
    names = list(LABEL_NAMES) + [f"label{v}" for v in range(len(LABEL_NAMES), IGNORE)]
    pixels = {names[v]: int(counts[v]) for v in range(IGNORE) if counts[v]}
    return {"pixels": pixels, "per_sample": per}


def _random_crop(samples: Sequence[tuple[np.ndarray, np.ndarray]], weights: np.ndarray,
                 size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A ``size`` crop around a random labelled pixel (padded white / 255), randomly flipped."""
    img, lab = samples[int(rng.choice(len(samples), p=weights))]
    h, w = lab.shape
    ys, xs = np.nonzero(lab != IGNORE) if lab.size < 4_000_000 else _sparse_labelled(lab, rng)
    k = int(rng.integers(len(ys)))
    # the chosen pixel lands anywhere inside the crop
    y0 = int(ys[k]) - int(rng.integers(size))
    x0 = int(xs[k]) - int(rng.integers(size))
    y0 = min(max(y0, 0), max(h - size, 0))
    x0 = min(max(x0, 0), max(w - size, 0))
    ci = np.full((size, size, 3), 255, np.uint8)
    cl = np.full((size, size), IGNORE, np.uint8)
    ch, cw = min(size, h - y0), min(size, w - x0)
    ci[:ch, :cw] = img[y0:y0 + ch, x0:x0 + cw]
    cl[:ch, :cw] = lab[y0:y0 + ch, x0:x0 + cw]
    if rng.random() < 0.5:
        ci, cl = ci[:, ::-1], cl[:, ::-1]
    if rng.random() < 0.5:
        ci, cl = ci[::-1], cl[::-1]
    return np.ascontiguousarray(ci), np.ascontiguousarray(cl)


def _sparse_labelled(lab: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Labelled pixels of a large mask, found on a coarse grid first (cheap)."""
    step = max(1, int(math.sqrt(lab.size / 1_000_000)))
    ys, xs = np.nonzero(lab[::step, ::step] != IGNORE)
    if len(ys) == 0:
        return np.nonzero(lab != IGNORE)
    return ys * step, xs * step


def _last(values: list[float]) -> float | None:
    return values[-1] if values else None

