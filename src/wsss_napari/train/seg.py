"""Stage 2: a segmentation network (``models.seg.SegNet``) trained on pseudo-masks.

Pseudo-masks are noisy but dense; a segmentation network trained on many of them averages the
noise out and learns sharper borders than the CAMs had (the method's second stage). Loss:
cross-entropy (pixels valued 255 ignored) plus a soft Dice term that keeps rare classes
(normal) from being swamped. Augmentations per the method: flips, Gaussian blur,
normalisation (inside the model, on the device). Same checkpoint / resume / seed rules as
stage 1 (:mod:`wsss_napari.train.loop`).
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import WsssError
from ..params import TrainSegParams
from ..progress import Progress
from . import augment as aug
from .cls import BalancedDraw, balance_weights
from .data import PatchDataset, PatchItem, resolve_bad, scan_patches
from .loop import (
    autocast,
    epoch_rng,
    epoch_steps,
    fit_epochs,
    make_loader,
    prepare_training,
    resume_state,
)

log = logging.getLogger(__name__)
IGNORE = aug.IGNORE


class SegTrainSet:
    """Augmented ``(uint8 (3, S, S), int64 mask (S, S))`` pairs; set :attr:`epoch` per epoch."""

    def __init__(self, items: Sequence[PatchItem], params: TrainSegParams, train: bool = True
                 ) -> None:
        self.base = PatchDataset(items, with_masks=True)
        self.params = params
        self.train = train
        self.epoch = 0
        labels = np.array([it.labels for it in items]).reshape(len(items), -1)
        #: single-label patches: their masks are exact up to glass (PistoSeg mosaics)
        self.single = np.flatnonzero(labels.sum(axis=1) == 1)
        #: patches of rare classes drawn more often (``params.balance``, training only)
        self._draw = BalancedDraw(balance_weights(labels) if train and params.balance
                                  else None, params.seed)

    def __len__(self) -> int:
        return len(self.base)

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rgb, mask, _ = self.base.load(index)
        if mask is None:
            raise WsssError(f"no mask for {self.base.items[index].path}")
        return rgb, mask

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        p = self.params
        rng = epoch_rng(p.seed, self.epoch if self.train else 0, index)
        index = self._draw(self.epoch, index)
        if (self.train and p.mosaic > 0 and len(self.single) >= 2
                and rng.random() < p.mosaic):
            picks = rng.choice(self.single, size=4, replace=len(self.single) < 4)
            tiles = []
            for i in picks:
                t_rgb, t_mask = aug.random_crop(*self._load(int(i)), p.crop_size, rng)
                tiles.append((t_rgb, np.zeros(3, np.float32), t_mask))
            rgb, _, mask = aug.mosaic(tiles, p.crop_size, rng)
        else:
            rgb, mask = aug.random_crop(*self._load(index), p.crop_size, rng)
        if self.train:
            rgb, mask = aug.random_flip(rgb, mask, rng)
            if p.rot90:
                rgb, mask = aug.random_rot90(rgb, mask, rng)
            if p.blur > 0 and rng.random() < p.blur:
                rgb = aug.gaussian_blur(rgb, rng)
            if p.stain_jitter > 0:
                rgb = aug.hed_jitter(rgb, p.stain_jitter, rng)
                rgb = aug.brightness_contrast(rgb, rng)
        mask = mask.astype(np.int64)
        mask[(mask > 3) & (mask != IGNORE)] = IGNORE
        return np.ascontiguousarray(rgb.transpose(2, 0, 1)), mask


def dice_loss(logits, target, ignore_index: int = IGNORE, eps: float = 1.0):
    """Soft multi-class Dice loss over labelled pixels, averaged over classes present."""
    import torch
    from torch.nn import functional as F

    n = logits.shape[1]
    valid = (target != ignore_index)
    t = torch.where(valid, target, torch.zeros_like(target))
    prob = torch.softmax(logits.float(), dim=1) * valid[:, None]
    onehot = F.one_hot(t, n).permute(0, 3, 1, 2).float() * valid[:, None]
    inter = (prob * onehot).sum(dim=(0, 2, 3))
    denom = prob.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3))
    dice = (2 * inter + eps) / (denom + eps)
    present = onehot.sum(dim=(0, 2, 3)) > 0
    if not bool(present.any()):
        return logits.sum() * 0.0
    return 1.0 - dice[present].mean()


def bce_dice_loss(logits, target, dice_weight: float = 1.0, ignore_index: int = IGNORE,
                  eps: float = 1.0):
    """One-vs-rest loss: per-class sigmoid BCE plus soft Dice of the sigmoid probabilities
    (classes present in the batch), over labelled pixels only."""
    import torch
    from torch.nn import functional as F

    n = logits.shape[1]
    valid = (target != ignore_index)
    if not bool(valid.any()):
        return logits.sum() * 0.0
    t = torch.where(valid, target, torch.zeros_like(target))
    onehot = F.one_hot(t, n).permute(0, 3, 1, 2).float()
    w = valid[:, None].float().expand_as(onehot)
    bce = F.binary_cross_entropy_with_logits(logits.float(), onehot, weight=w,
                                             reduction="sum") / (w.sum() + 1e-6)
    if dice_weight <= 0:
        return bce
    prob = torch.sigmoid(logits.float()) * w
    onehot = onehot * w
    inter = (prob * onehot).sum(dim=(0, 2, 3))
    denom = prob.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3))
    dice = (2 * inter + eps) / (denom + eps)
    present = onehot.sum(dim=(0, 2, 3)) > 0
    return bce + dice_weight * (1.0 - dice[present].mean())


def evaluate_segmenter(model, loader, device, use_amp: bool) -> dict[str, float]:
    """Validation numbers of ``model`` against the loader's masks (:mod:`wsss_napari.metrics`).

    ``miou`` is the challenge's mIoU over tumor / stroma / normal, as everywhere else;
    ``miou_bg`` averages the four labels (with background); ``pixel_acc`` all labels.
    """
    import torch

    from ..metrics import confusion_matrix, iou_report

    n = model.config.num_classes + 1
    conf = np.zeros((n, n), np.int64)
    model.eval()
    with torch.inference_mode():
        for x, y in loader:
            with autocast(device, use_amp):
                logits = model(model.normalize(x.to(device)))
            pred = logits.argmax(1).cpu().numpy()
            conf += confusion_matrix(pred, y.numpy(), n=n, ignore=IGNORE)
    model.train()
    report = iou_report(conf)
    return {"pixel_acc": report["accuracy"], "miou": report["miou"], "miou_bg": report["miou_bg"]}


def build_seg_model(params: TrainSegParams, mpp: float | None = None):
    """A fresh :class:`~wsss_napari.models.seg.SegNet` for ``params``; its input scaling follows
    the encoder's origin (:func:`~wsss_napari.models.registry.build_fresh_model`)."""
    from ..models.registry import build_fresh_model

    return build_fresh_model("seg", params.decoder, params.encoder, params.crop_size,
                             params.pretrained, params.weights, mpp)


def train_segmenter(
    data: str | Path | Sequence[PatchItem],
    mask_dir: str | Path | None,
    out_path: str | Path,
    params: TrainSegParams | None = None,
    resume: bool = False,
    val_items: Sequence[PatchItem] | None = None,
    csv_path: str | Path | None = None,
    on_bad: str = "skip",
    extra_meta: dict[str, Any] | None = None,
) -> Generator[Progress, None, Path]:
    """Train a segmentation network on (pseudo-)masks; yields progress, returns the model path.

    Args:
        data: a patch folder or items (items may carry their ``mask_path``).
        mask_dir: folder of masks named like the patches (``pseudo`` output); may be None
            when ``data`` items carry masks.
        out_path: the model file, rewritten after each epoch (state beside it for resume).
        params: training parameters (defaults: :class:`TrainSegParams`).
        resume: continue from ``<out>.state.safetensors``.
        val_items: validation items with masks; default ``params.val_fraction`` of ``data``.
        csv_path: labels from a CSV instead of file names.
        on_bad: ``'skip'`` or ``'stop'`` for bad files (unreadable, mask size mismatch ...).
        extra_meta: more entries for the model's ``config.extra``.

    Yields:
        ``Progress('train-seg', step, total, info)``; epoch ends carry ``val_miou`` (tumor /
        stroma / normal, as :func:`wsss_napari.metrics.iou_report`) and ``val_miou_bg``.

    Returns:
        ``out_path``.
    """
    from .sam import make_optimizer

    params = params or TrainSegParams()
    out = Path(out_path)
    items = _items_with_masks(data, mask_dir, csv_path, on_bad)
    train_items, val_items, model, device, use_amp = prepare_training(
        params, items, val_items, lambda p: build_seg_model(p, mpp=p.mpp if p.mpp > 0 else None),
        {**_pseudo_provenance(items), **(extra_meta or {})})
    from .stain_items import stain_training_items

    train_items, val_items = stain_training_items(params, model, train_items, val_items)
    optimizer = make_optimizer(model, params.optimizer, params.lr, 0.9, 1e-4, params.sam_rho)
    train_set = SegTrainSet(train_items, params)
    val_loader = (make_loader(SegTrainSet(val_items, params, train=False), params.batch_size,
                              False, params.seed, 0, params.workers) if val_items else None)
    steps_per_epoch = epoch_steps(train_set, params)
    total = steps_per_epoch * params.epochs
    start_epoch, history, _ = resume_state(out, model, optimizer) if resume else (0, [], {})
    if start_epoch >= params.epochs:
        yield Progress("train-seg", total, total, {"epoch": start_epoch})
        return out
    return (yield from fit_epochs(
        "train-seg", model, train_set, params, optimizer, _seg_loss(params), out=out,
        device=device, use_amp=use_amp, start_epoch=start_epoch, history=history,
        steps_per_epoch=steps_per_epoch,
        evaluate=(lambda m: evaluate_segmenter(m, val_loader, device, use_amp))
        if val_loader is not None else None,
    ))


def _pseudo_provenance(items: Sequence[PatchItem]) -> dict[str, Any]:
    """``{'pseudo': ...}`` from the masks' ``pseudo.run.json`` (when they share one folder):
    the model keeps which CAM model and parameters (epithelium prior included) made its
    training labels."""
    import json

    folders = {it.mask_path.parent for it in items if it.mask_path is not None}
    f = folders.pop() / "pseudo.run.json" if len(folders) == 1 else None
    if f is None or not f.is_file():
        return {}
    try:
        rec = json.loads(f.read_text())
    except (OSError, ValueError) as e:
        log.warning("ignoring the unreadable %s: %s", f, e)
        return {}
    if not isinstance(rec, dict):
        return {}
    return {"pseudo": {k: rec.get(k) for k in ("model_name", "model_hash", "version", "params")}}


def _items_with_masks(data: str | Path | Sequence[PatchItem], mask_dir: str | Path | None,
                      csv_path: str | Path | None, on_bad: str) -> list[PatchItem]:
    """The usable patches, each with its mask (scanned and reported, unless ``data`` is
    items that already carry masks)."""
    if isinstance(data, (str, Path)) or mask_dir is not None:
        report = scan_patches(data, csv_path=csv_path, mask_dir=mask_dir, require_masks=True)
        # a class with no positive does not stop segmentation training: masks carry the signal
        report.problems = [p for p in report.problems if p.path is not None]
        if report.problems or report.notes:
            log.warning("segmentation data report:\n%s", report.summary())
        return resolve_bad(report, on_bad)
    items = list(data)
    if not items or any(it.mask_path is None for it in items):
        raise WsssError("segmentation training needs a mask for every patch")
    return items


def _seg_loss(params: TrainSegParams):
    """``loss_fn(logits, y)`` of ``params.loss``: cross-entropy ignoring unlabelled pixels (0
    on a batch without any label) or per-class BCE, plus the weighted Dice term."""
    from torch.nn import functional as F

    def seg_loss(logits, y):
        if params.loss == "bce+dice":
            return bce_dice_loss(logits, y, params.dice_weight)
        loss = F.cross_entropy(logits, y, ignore_index=IGNORE)
        if bool((y == IGNORE).all()):
            loss = logits.sum() * 0.0
        if params.dice_weight > 0:
            loss = loss + params.dice_weight * dice_loss(logits, y)
        return loss

    return seg_loss
