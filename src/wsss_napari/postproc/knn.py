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
        n_labels: label values are 0 .. n_labels - 1.
    """

    ids: np.ndarray
    area: np.ndarray
    n_labels: int


def label_regions(labels: np.ndarray, n_labels: int = 4) -> Regions:
    """Connected regions of every label value (one ``cv2.connectedComponents`` each).

    Areas come from one ``bincount`` of the combined ids: 3x cheaper than asking OpenCV for
    per-label statistics.
    """
    import cv2

    acc = np.zeros(labels.shape, np.int32)
    for c in range(n_labels):
        mask = (labels == c).view(np.uint8)
        if mask.any():
            acc += cv2.connectedComponents(mask, connectivity=8, ltype=cv2.CV_32S)[1]
    acc *= n_labels
    acc += labels
    return Regions(acc, np.bincount(acc.ravel()), n_labels)


def _touched_tiles(small: np.ndarray, tile: int) -> np.ndarray:
    """Bool (Ty, Tx): tiles holding any small-region pixel."""
    h, w = small.shape
    ty, tx = -(-h // tile), -(-w // tile)
    rows = np.logical_or.reduceat(small, np.arange(0, h, tile), axis=0)
    return np.logical_or.reduceat(rows, np.arange(0, w, tile), axis=1).reshape(ty, tx)


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
    if not small_lut.any() or not (regions.area >= min_region).any():
        return labels
    small = np.take(small_lut, regions.ids)
    h, w = labels.shape
    nl = regions.n_labels
    gids, dists, votes, poss = [], [], [], []
    for ty, tx in zip(*np.nonzero(_touched_tiles(small, tile)), strict=True):
        cy0, cx0 = ty * tile, tx * tile
        cy1, cx1 = min(cy0 + tile, h), min(cx0 + tile, w)
        wy0, wx0 = max(cy0 - margin, 0), max(cx0 - margin, 0)
        wy1, wx1 = min(cy1 + margin, h), min(cx1 + margin, w)
        gid = regions.ids[wy0:wy1, wx0:wx1]
        sm = small[wy0:wy1, wx0:wx1]
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
    if not gids:
        return labels
    all_gid, dist, vote, all_pos = (np.concatenate(a) for a in (gids, dists, votes, poss))
    # one int64 key (region, distance in 1/1024 px): a stable argsort is 5x faster than
    # lexsort; ties keep tile-then-raster order
    key = (all_gid.astype(np.int64) << 32) | (dist * 1024).astype(np.int64)
    order = np.argsort(key, kind="stable")
    gid = all_gid[order]
    vote = vote[order]
    starts = np.flatnonzero(np.r_[True, gid[1:] != gid[:-1]])
    group = np.cumsum(np.r_[True, gid[1:] != gid[:-1]]) - 1
    rank = np.arange(gid.size) - starts[group]
    use = (rank < k) & (vote < nl)
    counts = np.bincount(group[use] * nl + vote[use], minlength=starts.size * nl).reshape(-1, nl)
    voted = counts.sum(1) > 0
    new_lut = np.full(regions.area.size, 255, np.uint8)
    new_lut[gid[starts][voted]] = np.argmax(counts[voted], axis=1).astype(np.uint8)
    new = new_lut[all_gid]
    keep = new != 255
    out = labels.copy()
    out.reshape(-1)[all_pos[keep]] = new[keep]
    return out
