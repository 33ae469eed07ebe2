"""kNN cleanup: small connected regions take the label their nearest large regions vote for.

A region (8-connected pixels of one label) smaller than ``min_region`` px is relabelled: each
of its pixels finds its nearest pixel of a large region (exact-ish Euclidean nearest via
``cv2.distanceTransformWithLabels``), the ``k`` region pixels closest to a large region vote
with the label found, the majority wins (ties: lower label). Nearest pixels are searched in
bounded windows (tiles with a margin) that hold small regions only, never with a KD-tree over
every pixel, so the cost follows the number of small regions, not the image size.

The connected components do not depend on ``min_region`` or ``k``: :func:`label_regions`
computes them once and :func:`knn_relabel` reuses them, so those sliders are cheap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Nearest-pixel search window: tiles of this edge...
TILE = 512
#: ... grown by this margin (px); a small region farther than this from any large one is kept.
MARGIN = 64


@dataclass(frozen=True)
class Regions:
    """Connected regions of a label map, per label (8-connectivity).

    Attributes:
        ids: int32 (H, W) region id per pixel, ``component * n_labels + label`` (unique).
        area: int64 (n_ids,) pixels per region id (0 for unused ids).
        top, left, bottom, right: int32 (n_ids,) bounding boxes (exclusive bottom / right).
        n_labels: label values are 0 .. n_labels - 1.
    """

    ids: np.ndarray
    area: np.ndarray
    top: np.ndarray
    left: np.ndarray
    bottom: np.ndarray
    right: np.ndarray
    n_labels: int


def label_regions(labels: np.ndarray, n_labels: int = 4) -> Regions:
    """Connected regions of every label value (one ``cv2.connectedComponentsWithStats`` each)."""
    import cv2

    acc = np.zeros(labels.shape, np.int32)
    per_label = []
    for c in range(n_labels):
        mask = (labels == c).view(np.uint8)
        if not mask.any():
            per_label.append(None)
            continue
        _, cc, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8, ltype=cv2.CV_32S)
        acc += cc
        per_label.append(stats)
    n_max = max((len(s) for s in per_label if s is not None), default=1)
    size = n_max * n_labels
    area = np.zeros(size, np.int64)
    top, left, bottom, right = (np.zeros(size, np.int32) for _ in range(4))
    for c, stats in enumerate(per_label):
        if stats is None:
            continue
        gid = np.arange(1, len(stats)) * n_labels + c
        s = stats[1:]
        area[gid] = s[:, cv2.CC_STAT_AREA]
        left[gid], top[gid] = s[:, cv2.CC_STAT_LEFT], s[:, cv2.CC_STAT_TOP]
        right[gid] = left[gid] + s[:, cv2.CC_STAT_WIDTH]
        bottom[gid] = top[gid] + s[:, cv2.CC_STAT_HEIGHT]
    acc *= n_labels
    acc += labels
    return Regions(acc, area, top, left, bottom, right, n_labels)


def _touched_tiles(reg: Regions, ids: np.ndarray, shape: tuple[int, int], tile: int) -> np.ndarray:
    """Bool (Ty, Tx): tiles that intersect the bounding box of any of ``ids``."""
    ty, tx = -(-shape[0] // tile), -(-shape[1] // tile)
    diff = np.zeros((ty + 1, tx + 1), np.int64)
    y0, x0 = reg.top[ids] // tile, reg.left[ids] // tile
    y1, x1 = (reg.bottom[ids] - 1) // tile + 1, (reg.right[ids] - 1) // tile + 1
    np.add.at(diff, (y0, x0), 1)
    np.add.at(diff, (y0, x1), -1)
    np.add.at(diff, (y1, x0), -1)
    np.add.at(diff, (y1, x1), 1)
    return diff.cumsum(0).cumsum(1)[:ty, :tx] > 0


def knn_relabel(labels: np.ndarray, regions: Regions, min_region: int, k: int,
                tile: int = TILE, margin: int = MARGIN) -> np.ndarray:
    """Relabel regions smaller than ``min_region`` px by a vote of their nearest large regions.

    Args:
        labels: uint8 (H, W) label map that ``regions`` was computed from.
        regions: :func:`label_regions` of ``labels``.
        min_region: regions with fewer pixels are relabelled; 0 disables.
        k: number of votes per region (its ``k`` pixels closest to a large region).
        tile, margin: search window geometry (see module constants).

    Returns:
        uint8 (H, W); ``labels`` itself when nothing changes.
    """
    import cv2

    if min_region <= 1:
        return labels
    small_lut = (regions.area > 0) & (regions.area < min_region)
    small_ids = np.flatnonzero(small_lut)
    if small_ids.size == 0 or not ((regions.area >= min_region).any()):
        return labels
    h, w = labels.shape
    nl = regions.n_labels
    gids, dists, votes, poss = [], [], [], []
    windows = []
    for ty, tx in zip(*np.nonzero(_touched_tiles(regions, small_ids, (h, w), tile)), strict=True):
        cy0, cx0 = ty * tile, tx * tile
        cy1, cx1 = min(cy0 + tile, h), min(cx0 + tile, w)
        wy0, wx0 = max(cy0 - margin, 0), max(cx0 - margin, 0)
        wy1, wx1 = min(cy1 + margin, h), min(cx1 + margin, w)
        gid = regions.ids[wy0:wy1, wx0:wx1]
        sm = small_lut[gid]
        core = (slice(cy0 - wy0, cy1 - wy0), slice(cx0 - wx0, cx1 - wx0))
        if not sm[core].any() or sm.all():
            continue
        dist, nearest = cv2.distanceTransformWithLabels(
            sm.view(np.uint8), cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)
        # DIST_LABEL_PIXEL numbers the zero (large-region) pixels 1..n in raster order
        large_label = np.concatenate(([255], labels[wy0:wy1, wx0:wx1][~sm])).astype(np.uint8)
        sel = sm[core]
        yy, xx = np.nonzero(sel)
        gids.append(gid[core][sel])
        dists.append(dist[core][sel])
        votes.append(large_label[nearest[core][sel]])
        poss.append((yy + cy0).astype(np.int64) * w + (xx + cx0))
        windows.append((cy0, cy1, cx0, cx1))
    if not gids:
        return labels
    gid, dist, vote, pos = (np.concatenate(a) for a in (gids, dists, votes, poss))
    order = np.lexsort((pos, dist, gid))
    gid, vote = gid[order], vote[order]
    starts = np.flatnonzero(np.r_[True, gid[1:] != gid[:-1]])
    group = np.cumsum(np.r_[True, gid[1:] != gid[:-1]]) - 1
    rank = np.arange(gid.size) - starts[group]
    use = (rank < k) & (vote < nl)
    counts = np.bincount(group[use] * nl + vote[use], minlength=starts.size * nl).reshape(-1, nl)
    voted = counts.sum(1) > 0
    new_lut = np.full(regions.area.size, 255, np.uint8)
    new_lut[gid[starts][voted]] = np.argmax(counts[voted], axis=1).astype(np.uint8)
    out = labels.copy()
    for cy0, cy1, cx0, cx1 in windows:
        new = new_lut[regions.ids[cy0:cy1, cx0:cx1]]
        change = new != 255
        out[cy0:cy1, cx0:cx1][change] = new[change]
    return out
