"""Queue items on other pixel grids: resampling, and writing decisions into an edit store."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import WsssError
from ..region import MaskGeometry
from .items import EXCLUDE, Decision, QueueItem


def resample_item(item: QueueItem, src: MaskGeometry, dst: MaskGeometry,
                  values: np.ndarray | None = None) -> tuple[int, int, np.ndarray]:
    """The item's mask (or ``values`` over its box) on another grid: ``(row, col, array)``
    there, by nearest pixel centres (pixels outside the box: ``False`` / 255)."""
    r0, c0, h, w = item.box
    ly0, lx0 = src.to_level0(r0, c0)
    ly1, lx1 = src.to_level0(r0 + h, c0 + w)
    fy0, fx0 = dst.from_level0(ly0, lx0)
    fy1, fx1 = dst.from_level0(ly1, lx1)
    y0, x0 = int(math.floor(fy0)), int(math.floor(fx0))
    y1, x1 = max(int(math.ceil(fy1)), y0 + 1), max(int(math.ceil(fx1)), x0 + 1)
    # centre of each destination pixel -> source pixel of the item's box
    cy = dst.y + (np.arange(y0, y1) + 0.5) * dst.downsample
    cx = dst.x + (np.arange(x0, x1) + 0.5) * dst.downsample
    sy = np.floor((cy - src.y) / src.downsample).astype(int) - r0
    sx = np.floor((cx - src.x) / src.downsample).astype(int) - c0
    oky, okx = (sy >= 0) & (sy < h), (sx >= 0) & (sx < w)
    src_arr = item.mask if values is None else np.asarray(values)
    out = np.zeros((y1 - y0, x1 - x0), bool) if values is None else \
        np.full((y1 - y0, x1 - x0), 255, src_arr.dtype)
    out[np.ix_(oky, okx)] = src_arr[np.ix_(sy[oky], sx[okx])]
    return y0, x0, out


def paste(out: np.ndarray, y: int, x: int, m: np.ndarray) -> None:
    h, w = out.shape
    ys, xs = max(y, 0), max(x, 0)
    ye, xe = min(y + m.shape[0], h), min(x + m.shape[1], w)
    if ye > ys and xe > xs:
        out[ys:ye, xs:xe] |= m[ys - y:ye - y, xs - x:xe - x]


def write_decision(store: Any, item: QueueItem, decision: Decision,
                   geometry: MaskGeometry) -> int:
    """Write a decision into an ``EditStore``: the item's pixels get the label (accept /
    relabel) or lose their edits (exclude). Returns the number of store pixels touched."""
    dst = MaskGeometry(downsample=float(store.downsample))
    y, x, m = resample_item(item, geometry, dst)
    if decision.action == EXCLUDE:
        return int(store.clear(y, x, m.shape[0], m.shape[1], mask=m))
    labels = np.full(m.shape, int(decision.label), np.uint8)  # type: ignore[arg-type]
    return int(store.write(y, x, labels, edited_mask=m))


def write_labels(store: Any, item: QueueItem, labels: np.ndarray,
                 geometry: MaskGeometry) -> int:
    """Write painted labels ``uint8 (h, w)`` over the item's box (255 = not painted) into an
    ``EditStore``; returns the number of store pixels written."""
    r0, c0, h, w = item.box
    labels = np.asarray(labels, np.uint8)
    if labels.shape != (h, w):
        raise WsssError(f"painted labels {labels.shape} do not match the item's box {(h, w)}")
    y, x, lab = resample_item(item, geometry, MaskGeometry(downsample=float(store.downsample)),
                              values=labels)
    return int(store.write(y, x, lab))
