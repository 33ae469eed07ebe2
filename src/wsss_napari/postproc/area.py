"""Minimum-area rule: a class covering under p % of a sub-patch gives its pixels away.

CAMs spill a little of every class everywhere; a class holding only a sliver of a
sub-patch is almost always such a spill. Its pixels go to the next best class by CAM value
(or to background) among those not dropped in that sub-patch. The sub-patch grid is anchored
at global coordinates (``origin``), so a crop of an image gets the same grid as the whole.
"""

from __future__ import annotations

import numpy as np

from ..classes import BACKGROUND
from ._fast import scratch
from .background import background_score


def block_counts(labels: np.ndarray, n_labels: int, patch: int,
                 origin: tuple[int, int] = (0, 0)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixels of each label per sub-patch of a grid anchored at global (0, 0).

    Returns:
        (counts int64 (n_labels, By, Bx), row edges (By+1,), column edges (Bx+1,)),
        edges in local coordinates of ``labels``.
    """
    h, w = labels.shape
    pad_top, pad_left = origin[0] % patch, origin[1] % patch
    by, bx = -(-(pad_top + h) // patch), -(-(pad_left + w) // patch)
    ry = np.clip(np.arange(by + 1) * patch - pad_top, 0, h)
    rx = np.clip(np.arange(bx + 1) * patch - pad_left, 0, w)
    hp, wp = by * patch, bx * patch
    if (hp, wp) == (h, w):
        src = labels
    else:  # pad to whole blocks with a value that is no label, so one reshape-sum counts all
        src = np.full((hp, wp), 255, np.uint8)
        src[pad_top:pad_top + h, pad_left:pad_left + w] = labels
    import cv2

    # per label: a 0/1 mask, its row sums within each block (one OpenCV reduce over the
    # (rows x blocks, patch) view), then the block sums of those (4x less time than numpy)
    src = np.ascontiguousarray(src)
    mask = scratch("u8b", src.shape, np.uint8)
    counts = np.empty((n_labels, by, bx), np.int64)
    for c in range(n_labels):
        cv2.compare(src, c, cv2.CMP_EQ, mask)
        cv2.bitwise_and(mask, 1, mask)
        rows = cv2.reduce(mask.reshape(hp * bx, patch), 1, cv2.REDUCE_SUM, dtype=cv2.CV_32S)
        counts[c] = rows.reshape(by, patch, bx).sum(axis=1, dtype=np.int64)
    return counts, ry, rx


def min_area_rule(labels: np.ndarray, cams: np.ndarray, allowed: np.ndarray,
                  maxcam: np.ndarray, bg_exponent: float, patch: int, min_pct: float,
                  origin: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Drop classes under ``min_pct`` % of each ``patch`` x ``patch`` sub-patch.

    Args:
        labels: uint8 (H, W) in 0..3 (modified copy returned).
        cams: float32 (C, H, W) class activation maps.
        allowed: bool (C,) classes that may appear at all.
        maxcam: float32 (H, W), largest allowed CAM (defines the background score).
        bg_exponent: y of the background channel ``(1 - maxcam)^y``.
        patch: sub-patch edge in px.
        min_pct: percentage of the sub-patch's pixels under which a class is dropped.
        origin: global (y, x) of ``labels[0, 0]`` (anchors the grid).

    Returns:
        uint8 (H, W) labels; only foreground classes are ever dropped.
    """
    if min_pct <= 0:
        return labels
    n_cls = cams.shape[0]
    counts, ry, rx = block_counts(labels, n_cls, patch, origin)
    sizes = np.outer(np.diff(ry), np.diff(rx))
    dropped = (counts > 0) & (counts * 100.0 < min_pct * sizes[None])
    if not dropped.any():
        return labels
    out = labels.copy()
    for iy, ix in zip(*np.nonzero(dropped.any(axis=0)), strict=True):
        ys, xs = slice(ry[iy], ry[iy + 1]), slice(rx[ix], rx[ix + 1])
        lab = out[ys, xs]
        drop = dropped[:, iy, ix]
        sel = drop[np.minimum(lab, n_cls - 1)] & (lab < n_cls)
        keep = allowed & ~drop
        # next best among the kept classes and background, ties to the lower label
        cand = [int(c) for c in np.flatnonzero(keep)]
        vals = [cams[c, ys, xs][sel] for c in cand]
        vals.append(background_score(maxcam[ys, xs][sel], bg_exponent))
        cand.append(BACKGROUND)
        new = np.asarray(cand, np.uint8)[np.argmax(np.stack(vals), axis=0)]
        lab[sel] = new
    return out
