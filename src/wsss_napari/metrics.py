"""Segmentation metrics of the WSSS4LUAD challenge: confusion matrix, IoU, mIoU, fwIoU.

Conventions: rows of the confusion matrix are the ground truth, columns the prediction;
ground-truth pixels equal to ``ignore`` (255, "unlabelled") are not counted. Over a data set,
confusion matrices are *summed* and IoU computed once (pixel-weighted, as the challenge does),
not averaged per image.

The challenge metric is the mIoU over tumor / stroma / normal **with the background mask
given**: predicted labels are forced to background where the background mask is 1 (see
:func:`force_background`); since that mask equals the ground-truth background, background
never counts as a tumor / stroma / normal false positive and those three IoUs measure the
tissue classification only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import WsssError
from .classes import BACKGROUND, LABEL_NAMES

#: Classes averaged by the challenge metric (tumor, stroma, normal).
FOREGROUND = (0, 1, 2)


def confusion_matrix(pred: np.ndarray, gt: np.ndarray, n: int = 4, ignore: int = 255) -> np.ndarray:
    """int64 (n, n) counts: ``conf[g, p]`` pixels of ground truth ``g`` predicted ``p``.

    Raises:
        WsssError: shapes differ, or labels outside ``0..n-1`` (other than ``ignore``).
    """
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.shape != gt.shape:
        raise WsssError(f"prediction {pred.shape} and ground truth {gt.shape} differ in size")
    valid = gt != ignore
    g = gt[valid].astype(np.int64)
    p = pred[valid].astype(np.int64)
    if g.size and (g.max() >= n or g.min() < 0):
        raise WsssError(f"ground truth holds labels outside 0..{n - 1} (and {ignore} = ignore)")
    if p.size and (p.max() >= n or p.min() < 0):
        raise WsssError(f"prediction holds labels outside 0..{n - 1}")
    return np.bincount(g * n + p, minlength=n * n).reshape(n, n)


def force_background(pred: np.ndarray, background: np.ndarray) -> np.ndarray:
    """``pred`` with class 3 wherever ``background`` is nonzero (the challenge protocol)."""
    bg = np.asarray(background)
    if bg.shape != pred.shape:
        raise WsssError(f"background mask {bg.shape} and prediction {pred.shape} differ in size")
    out = np.array(pred, np.uint8, copy=True)
    out[bg != 0] = BACKGROUND
    return out


def iou_per_class(conf: np.ndarray) -> np.ndarray:
    """IoU of every class (NaN where the class is in neither ground truth nor prediction)."""
    conf = np.asarray(conf, np.float64)
    tp = np.diag(conf)
    union = conf.sum(0) + conf.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def iou_report(conf: np.ndarray, names: tuple[str, ...] = LABEL_NAMES,
               foreground: tuple[int, ...] = FOREGROUND) -> dict[str, Any]:
    """All the numbers of a confusion matrix.

    Returns:
        dict with ``iou`` (name -> IoU, NaN if absent), ``miou`` (tumor / stroma / normal, the
        challenge metric; absent classes skipped), ``miou_bg`` (all classes), ``fwiou``
        (IoU weighted by ground-truth frequency), ``accuracy``, ``pixels`` and ``confusion``.
    """
    conf = np.asarray(conf, np.int64)
    iou = iou_per_class(conf)
    freq = conf.sum(1) / max(conf.sum(), 1)
    fg = iou[list(foreground)]

    def mean(v: np.ndarray) -> float:
        return float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")

    return {
        "iou": {names[i]: float(iou[i]) for i in range(len(iou))},
        "miou": mean(fg),
        "miou_bg": mean(iou),
        "fwiou": float(np.nansum(freq * np.nan_to_num(iou))),
        "accuracy": float(np.trace(conf) / max(conf.sum(), 1)),
        "pixels": int(conf.sum()),
        "confusion": conf.tolist(),
    }


def format_report(report: dict[str, Any], names: tuple[str, ...] = LABEL_NAMES) -> str:
    """A plain-text table of an :func:`iou_report` (per-class IoU, summary, confusion matrix)."""
    width = max(len(n) for n in names) + 2
    lines = [f"{'class':<{width}}{'IoU':>8}"]
    lines += [f"{k:<{width}}{v:>8.4f}" for k, v in report["iou"].items()]
    lines.append("")
    lines.append(f"{'mIoU (tumor/stroma/normal)':<30}{report['miou']:>8.4f}")
    lines.append(f"{'mIoU with background':<30}{report['miou_bg']:>8.4f}")
    lines.append(f"{'frequency-weighted IoU':<30}{report['fwiou']:>8.4f}")
    lines.append(f"{'pixel accuracy':<30}{report['accuracy']:>8.4f}")
    lines.append("")
    lines.append("confusion (rows: ground truth, columns: prediction)")
    cw = max(max(len(n) for n in names), *(len(str(v)) for row in report["confusion"]
                                           for v in row)) + 2
    lines.append(" " * width + "".join(f"{n:>{cw}}" for n in names))
    for n, row in zip(names, report["confusion"], strict=False):
        lines.append(f"{n:<{width}}" + "".join(f"{v:>{cw}}" for v in row))
    return "\n".join(lines)
