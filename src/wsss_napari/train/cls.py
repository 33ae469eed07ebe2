"""Stage 1: train the CAM classifier from patch-level multi-labels.

Follows the method: random resized crops (scale 0.25-1) to ``crop_size``, horizontal and
vertical flips, H&E normalisation (inside the model, on the device), SGD with polynomial
learning-rate decay, and a BCE loss whose positive weight ``(neg / pos) ** 0.5`` per class
balances rare classes without over-shooting. Optional label-consistent CutMix and mosaics of
single-label patches, and stain / colour jitter because stain varies between labs.

The model file is rewritten (atomically) after every epoch, with a resumable training state
beside it (see :mod:`wsss_napari.train.loop`), so an interrupted run loses at most one epoch.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import WsssError
from ..params import TrainClsParams
from ..progress import Progress
from . import augment as aug
from .data import PatchDataset, PatchItem, resolve_bad, scan_patches
from .loop import (
    autocast,
    epoch_rng,
    epoch_steps,
    fit_epochs,
    make_loader,
    multilabel_metrics,
    prepare_training,
    resume_state,
    state_path,
)

log = logging.getLogger(__name__)


class ClsTrainSet:
    """Augmented training samples ``(uint8 (3, S, S), labels float32 (C,))``.

    Randomness of item ``i`` in epoch ``e`` comes from ``(seed, e, i)``: reproducible and
    independent of worker scheduling. Set :attr:`epoch` before each epoch.
    """

    def __init__(self, items: Sequence[PatchItem], params: TrainClsParams) -> None:
        self.base = PatchDataset(items)
        self.params = params
        self.epoch = 0
        labels = np.array([it.labels for it in items])
        #: indices of single-label patches: safe CutMix donors and mosaic tiles
        self.single = np.flatnonzero(labels.sum(axis=1) == 1)
        #: sampling weight per patch (``params.balance``): its rarest class's ``1/sqrt(pos)``
        self._draw = BalancedDraw(balance_weights(labels) if params.balance else None,
                                  params.seed)

    def sample_index(self, index: int) -> int:
        """The patch drawn at position ``index`` this epoch (re-drawn per epoch if balanced)."""
        return self._draw(self.epoch, index)

    def __len__(self) -> int:
        return len(self.base)

    def _crop(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        rgb, _, labels = self.base.load(index)
        p = self.params
        rgb, _ = aug.random_resized_crop(rgb, None, p.crop_size, rng,
                                         scale=(p.crop_scale_min, 1.0))
        rgb, _ = aug.random_flip(rgb, None, rng)
        if p.rot90:
            rgb, _ = aug.random_rot90(rgb, None, rng)
        return rgb, labels

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        p = self.params
        rng = epoch_rng(p.seed, self.epoch, index)
        index = self.sample_index(index)
        if p.mosaic > 0 and len(self.single) >= 2 and rng.random() < p.mosaic:
            picks = rng.choice(self.single, size=4, replace=len(self.single) < 4)
            tiles = [(*self._crop(int(i), rng), None) for i in picks]
            rgb, labels, _ = aug.mosaic(tiles, p.crop_size, rng)
        else:
            rgb, labels = self._crop(index, rng)
        if p.cutmix > 0 and len(self.single) >= 1 and rng.random() < p.cutmix:
            donor, donor_labels = self._crop(int(rng.choice(self.single)), rng)
            rgb, labels, _ = aug.cutmix(rgb, labels, donor, donor_labels, rng)
        if p.stain_jitter > 0:
            rgb = aug.hed_jitter(rgb, p.stain_jitter, rng)
            rgb = aug.brightness_contrast(rgb, rng)
        return np.ascontiguousarray(rgb.transpose(2, 0, 1)), labels.astype(np.float32)


class ClsEvalSet:
    """Validation samples: the whole patch resized to ``crop_size`` (no randomness)."""

    def __init__(self, items: Sequence[PatchItem], crop_size: int) -> None:
        self.base = PatchDataset(items)
        self.size = crop_size

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        import cv2

        rgb, _, labels = self.base.load(index)
        if rgb.shape[:2] != (self.size, self.size):
            rgb = cv2.resize(rgb, (self.size, self.size), interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(rgb.transpose(2, 0, 1)), labels.astype(np.float32)


class BalancedDraw:
    """Which patch position ``index`` of an epoch holds: itself, or with sampling
    ``weights`` a draw with replacement, re-drawn per epoch from ``(seed, epoch)``."""

    def __init__(self, weights: np.ndarray | None, seed: int) -> None:
        self.weights, self.seed = weights, seed
        self._order: tuple[int, np.ndarray] | None = None

    def __call__(self, epoch: int, index: int) -> int:
        if self.weights is None:
            return index
        if self._order is None or self._order[0] != epoch:
            drawn = epoch_rng(self.seed, epoch).choice(len(self.weights),
                                                       size=len(self.weights), p=self.weights)
            self._order = (epoch, drawn)
        return int(self._order[1][index])


def balance_weights(labels: np.ndarray) -> np.ndarray:
    """Per-patch sampling probabilities: patches of rare classes drawn more often.

    A patch's weight is ``1 / sqrt(pos_c)`` of its rarest positive class ``c`` (patches
    without a label get the weight of the most common class), normalised to sum to 1.
    """
    pos = np.maximum(labels.sum(axis=0), 1.0)
    per_class = 1.0 / np.sqrt(pos)
    w = np.where(labels > 0, per_class[None, :], 0.0).max(axis=1)
    w = np.where(w > 0, w, per_class.min())
    return (w / w.sum()).astype(np.float64)


def pos_weight(labels: np.ndarray) -> np.ndarray:
    """Per-class BCE positive weight ``(neg / pos) ** 0.5`` (1 for a class without positives)."""
    pos = labels.sum(axis=0).astype(np.float64)
    neg = len(labels) - pos
    w = np.where(pos > 0, np.sqrt(neg / np.maximum(pos, 1)), 1.0)
    return np.maximum(w, 1e-3).astype(np.float32)


def _items_of(data: str | Path | Sequence[PatchItem], csv_path, on_bad: str) -> list[PatchItem]:
    if isinstance(data, (str, Path)):
        report = scan_patches(data, csv_path=csv_path)
        if report.problems or report.notes:
            log.warning("training data report:\n%s", report.summary())
        return resolve_bad(report, on_bad)
    items = list(data)
    if not items:
        raise WsssError("no training patches given")
    return items


def evaluate_classifier(model, loader, device, use_amp: bool) -> dict[str, float]:
    """Validation metrics (per-class F1 / AP, exact match) of ``model`` over ``loader``."""
    import torch

    model.eval()
    probs, targets = [], []
    with torch.inference_mode():
        for x, y in loader:
            x = model.normalize(x.to(device))
            with autocast(device, use_amp):
                logits = model(x)
            probs.append(torch.sigmoid(logits.float()).cpu().numpy())
            targets.append(y.numpy())
    model.train()
    if not probs:
        return {}
    return multilabel_metrics(np.concatenate(probs), np.concatenate(targets),
                              tuple(model.config.class_names))


def build_cam_model(params: TrainClsParams, mpp: float | None = None):
    """A fresh CAM model for ``params`` (backbone, crop size, pretrained / weights); its
    input scaling follows the backbone's origin
    (:func:`~wsss_napari.models.registry.build_fresh_model`)."""
    from ..models.registry import build_fresh_model, default_arch

    return build_fresh_model("cam", default_arch(params.backbone), params.backbone,
                             params.crop_size, params.pretrained, params.weights, mpp)


def train_classifier(
    data: str | Path | Sequence[PatchItem],
    out_path: str | Path,
    params: TrainClsParams | None = None,
    resume: bool = False,
    val_items: Sequence[PatchItem] | None = None,
    csv_path: str | Path | None = None,
    on_bad: str = "skip",
    extra_meta: dict[str, Any] | None = None,
) -> Generator[Progress, None, Path]:
    """Train a CAM classifier; yields progress per step and returns the model path.

    Args:
        data: a patch folder (challenge layout, or with ``csv_path``) or scanned items.
        out_path: the model file (``.safetensors``), rewritten after each epoch; the
            resumable state goes to ``<out>.state.safetensors``.
        params: training parameters (defaults: :class:`TrainClsParams`).
        resume: continue from the state file of ``out_path`` (same params expected).
        val_items: validation patches; default: ``params.val_fraction`` of ``data``.
        csv_path: labels from a CSV ``file,labels`` instead of file names.
        on_bad: ``'skip'`` bad files (logged report) or ``'stop'`` with a WsssError.
        extra_meta: more entries for the model's ``config.extra`` (e.g. the data source).

    Yields:
        ``Progress('train-cls', step, total_steps, info={'epoch', 'loss', 'lr', ...})``;
        the last step of each epoch carries the validation metrics (``val_*``).

    Returns:
        ``out_path``.
    """
    params = params or TrainClsParams()
    out = Path(out_path)
    items = _items_of(data, csv_path, on_bad)
    train_items, val_items, model, device, use_amp = prepare_training(
        params, items, val_items,
        lambda p: build_cam_model(p, mpp=p.mpp if p.mpp > 0 else None), extra_meta)

    from .stain_items import stain_training_items

    train_items, val_items = stain_training_items(params, model, train_items, val_items)
    criterion, optimizer = _loss_and_optimizer(params, model, train_items, device)
    train_set = ClsTrainSet(train_items, params)
    val_loader = (make_loader(ClsEvalSet(val_items, params.crop_size), params.batch_size, False,
                              params.seed, 0, params.workers) if val_items else None)
    steps = epoch_steps(train_set, params)
    total = steps * params.epochs
    start_epoch, history = _resume(out, model, optimizer, params) if resume else (0, [])
    if start_epoch >= params.epochs:
        log.info("training already finished (%d epochs); nothing to resume", start_epoch)
        yield Progress("train-cls", total, total, {"epoch": start_epoch})
        return out
    return (yield from fit_epochs(
        "train-cls", model, train_set, params, optimizer, criterion, out=out, device=device,
        compute_loss=(_puzzle_loss(params, model, criterion, total)
                      or _cam_loss(params, model, criterion)),
        use_amp=use_amp, start_epoch=start_epoch, history=history, steps_per_epoch=steps,
        evaluate=(lambda m: evaluate_classifier(m, val_loader, device, use_amp))
        if val_loader is not None else None,
    ))


def _loss_and_optimizer(params: TrainClsParams, model, train_items: Sequence[PatchItem], device):
    """BCE weighted towards each class's rarer side (:func:`pos_weight`), and the optimizer
    ``params`` names (SGD, AdamW or SAM)."""
    import torch

    from .sam import make_optimizer

    labels = np.array([it.labels for it in train_items], dtype=np.float32)
    pw = torch.from_numpy(pos_weight(labels)).to(device)
    criterion = torch.nn.BCEWithLogitsLoss(pos_weight=pw)
    optimizer = make_optimizer(model, params.optimizer, params.lr, params.momentum,
                               params.weight_decay, params.sam_rho)
    return criterion, optimizer


def _resume(out: Path, model, optimizer, params: TrainClsParams) -> tuple[int, list[dict]]:
    """Finished epochs and history of the state beside ``out``, loaded into the model and the
    optimizer (a state of another backbone is refused: it cannot continue this run)."""
    start_epoch, history, meta = resume_state(out, model, optimizer)
    backbone = meta.get("params", {}).get("backbone")
    if backbone != params.backbone:
        raise WsssError(f"cannot resume: the state in '{state_path(out)}' was trained with "
                        f"backbone {backbone!r}, not {params.backbone!r}")
    return start_epoch, history


def _cam_loss(params: TrainClsParams, model, criterion):
    """The ``compute_loss`` of :func:`fit_epochs` for activation dropout (:mod:`.act_dropout`)
    and the area loss (:mod:`.area_loss`), or ``None`` when both are off or cannot apply:
    Puzzle-CAM's loss replaces them, and a model without fused features and a 1x1 classifier
    (Grad-CAM, the hybrid) trains without them."""
    rate, area = params.act_dropout, params.area_loss
    if (rate <= 0 and area <= 0) or params.puzzle > 0:
        return None
    if not (hasattr(model, "fused_features") and hasattr(model, "classifier")):
        log.info("activation dropout and the area loss need a CamNet (fused features, 1x1 "
                 "classifier); %s trains without them", type(model).__name__)
        return None
    import torch

    from .act_dropout import drop_mask
    from .area_loss import area_loss

    gen = torch.Generator(device=next(model.parameters()).device)

    def compute_loss(m, x, y, step):
        feats = m.fused_features(x)
        keep = None
        if rate > 0:
            # drawn from (seed, step): a resumed run drops exactly what an uninterrupted one would
            gen.manual_seed(params.seed * 1_000_003 + step)
            keep = drop_mask(feats, rate, gen)
        maps = m.classifier(feats if keep is None else feats * keep)
        loss = criterion(maps.float().mean(dim=(2, 3)), y)
        if area > 0:  # on the maps the model really makes, not the dropped ones
            full = maps if keep is None else m.classifier(feats)
            loss = loss + area * area_loss(full, x * m.pixel_std + m.pixel_mean, y)
        return loss

    return compute_loss


def _puzzle_loss(params: TrainClsParams, model, criterion, total: int):
    """Puzzle-CAM's ``compute_loss`` for :func:`fit_epochs` (tile-vs-whole consistency, ramped
    over ``total`` steps), or ``None`` when ``params.puzzle`` is off; needs a CNN CAM model."""
    if params.puzzle <= 0:
        return None
    from .puzzle import PIECES, puzzle_loss, puzzle_weight

    unit = PIECES * int(getattr(model, "stride", 1))
    if params.crop_size % unit or not hasattr(model, "class_maps") or model.needs_grad:
        raise WsssError(f"--puzzle needs a CNN CAM model and a crop size that is a "
                        f"multiple of {unit} (2 x the CAM stride), not {params.crop_size}")

    def compute_loss(m, x, y, step):
        alpha = puzzle_weight(params.puzzle, step, total)
        return puzzle_loss(m, x, y, criterion, alpha)[0]

    return compute_loss
