"""kNN cleanup: small connected regions take the label their nearest large regions vote for.

A region (8-connected pixels of one label) smaller than ``min_region`` px is relabelled: each
of its pixels finds its nearest pixel of a large region, the ``k`` region pixels closest to a
large region vote with the label found (distance ties: raster order), the majority wins
(ties: lower label). No KD-tree over every pixel; the cost follows the small-region pixels:

- a pixel with a large pixel among its 4 neighbours is at distance 1, one with a large pixel
  only diagonally at sqrt(2); these are read directly around every small pixel (no distance
  transform). Equidistant large neighbours: the first in scan order (up, left, right, down).
- only a region with fewer than ``min(k, area)`` such pixels (enclosed by other small
  regions: ~2 % of them on the benchmark's maps) needs farther pixels; those get an exact-ish
  Euclidean nearest pixel from ``cv2.distanceTransformWithLabels`` (5x5 chamfer) in a window
  around the region grown up to :data:`MARGIN` px (a region with no large pixel that close
  keeps its label).

The connected components do not depend on ``min_region`` or ``k``: :func:`label_regions`
computes them once and :func:`knn_relabel` reuses them, so those sliders are cheap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._fast import MAX_U16, areas, scratch
from ._kernels import small_region_pixels

#: Largest margin (px) around an enclosed small region searched for large-region pixels.
MARGIN = 64
#: First margin tried (doubled until a large pixel is in the window, up to MARGIN).
FIRST_MARGIN = 8


@dataclass(frozen=True)
class Regions:
    """Connected regions of a label map, per label (8-connectivity).

    Attributes:
        ids: uint16 (H, W) region id per pixel (int32 when there are more than 65535
            regions), unique over all labels, 1 .. n_ids - 1.
        area: int64 (n_ids,) pixels per region id (0 for id 0).
        n_labels: label values are 0 .. n_labels - 1.
    """

    ids: np.ndarray
    area: np.ndarray
    n_labels: int


def label_regions(labels: np.ndarray, n_labels: int = 4) -> Regions:
    """Connected regions of every label value at once (one multi-label labelling).

    ``cc3d`` labels all values in one pass (62 ms at 4096^2 against 4 x 30 ms of binary
    ``cv2.connectedComponents`` plus 3 x 14 ms of masked adds to merge their ids, measured).
    It skips value 0, so the labels are shifted by one first. ``ids`` are copied to uint16
    (half the bytes of every later pass) unless there are more than 65535 regions.
    """
    import cc3d
    import cv2

    shifted = cv2.add(np.ascontiguousarray(labels), 1)  # 255 saturates: not a label value
    ids, n = cc3d.connected_components(shifted, connectivity=8, return_N=True)
    ids = ids.astype(np.uint16 if n <= MAX_U16 else np.int32)
    if int(labels.max(initial=0)) >= n_labels:  # other values are no region (id 0)
        ids[labels >= n_labels] = 0
    return Regions(ids, areas(ids, int(n) + 1), n_labels)


def _vote(gid: np.ndarray, rank_key: np.ndarray, vote: np.ndarray, k: int, n_labels: int,
          n_ids: int) -> np.ndarray:
    """Per region id, the majority of the ``k`` votes with the smallest ``rank_key``.

    ``gid`` / ``rank_key`` / ``vote`` are per pixel, in raster order (stable sort keeps it for
    ties). Returns uint8 (n_ids,): the winning label, 255 where a region got no vote.
    """
    new_lut = np.full(n_ids, 255, np.uint8)
    if gid.size == 0:
        return new_lut
    if n_ids <= MAX_U16 + 1 and int(rank_key.max()) <= 1:
        # ranks 0 / 1 (distance 1 / sqrt 2): rank 0 first, then a stable radix sort by id
        pre = np.concatenate([np.flatnonzero(rank_key == 0), np.flatnonzero(rank_key != 0)])
        order = pre[np.argsort(gid[pre].astype(np.uint16), kind="stable")]
    else:
        order = np.argsort(gid.astype(np.int64) * (int(rank_key.max()) + 1) + rank_key,
                           kind="stable")
    g, v = gid[order], vote[order]
    first = np.r_[True, g[1:] != g[:-1]]
    starts = np.flatnonzero(first)
    group = np.cumsum(first) - 1
    use = (np.arange(g.size) - starts[group] < k) & (v < n_labels)
    counts = np.bincount(group[use] * n_labels + v[use],
                         minlength=starts.size * n_labels).reshape(-1, n_labels)
    voted = counts.sum(1) > 0
    new_lut[g[starts][voted]] = np.argmax(counts[voted], axis=1).astype(np.uint8)
    return new_lut


def _enclosed_votes(pix: np.ndarray, gid: np.ndarray, big: np.ndarray,
                    shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Nearest large pixel (distance, label) for pixels of regions away from large ones.

    One distance transform per region, in a window around it; when the regions are so many
    that the windows would cost more than one transform over the area they all lie in
    (speckled maps: thousands of regions inside small regions), that one transform.

    Args:
        pix: flat positions (raster order) of the pixels of the enclosed regions.
        gid: their region ids.
        big: uint8 (H, W): label where a large region is, 255 where a small one is.

    Returns:
        (distance float32, label uint8 (255 = none within MARGIN)) per pixel.
    """
    h, w = shape
    dist = np.full(pix.size, np.inf, np.float32)
    vote = np.full(pix.size, 255, np.uint8)
    order = np.argsort(gid, kind="stable")
    g = gid[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    ys, xs = pix[order] // w, pix[order] % w
    box = np.stack([np.minimum.reduceat(ys, starts), np.minimum.reduceat(xs, starts),
                    np.maximum.reduceat(ys, starts) + 1, np.maximum.reduceat(xs, starts) + 1])
    # measured costs of a windowed transform: ~60 us a call + ~5 ns a pixel
    win_px = ((box[2] - box[0] + 2 * FIRST_MARGIN) * (box[3] - box[1] + 2 * FIRST_MARGIN)).sum()
    y0, x0 = max(int(box[0].min()) - MARGIN, 0), max(int(box[1].min()) - MARGIN, 0)
    y1, x1 = min(int(box[2].max()) + MARGIN, h), min(int(box[3].max()) + MARGIN, w)
    if (y1 - y0) * (x1 - x0) * 8e-9 < starts.size * 60e-6 + win_px * 5e-9:
        d, v = _nearest_large(big[y0:y1, x0:x1], ys - y0, xs - x0)
        far = d > MARGIN
        d[far], v[far] = np.inf, 255
        dist[order], vote[order] = d, v
        return dist, vote
    bounds = np.r_[starts, g.size]
    for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        y, x = ys[a:b], xs[a:b]
        margin = FIRST_MARGIN
        while True:
            wy0, wx0 = max(int(box[0, i]) - margin, 0), max(int(box[1, i]) - margin, 0)
            wy1, wx1 = min(int(box[2, i]) + margin, h), min(int(box[3, i]) + margin, w)
            win = big[wy0:wy1, wx0:wx1]
            if (win != 255).any() or margin >= MARGIN:
                break
            margin *= 2
        d, v = _nearest_large(win, y - wy0, x - wx0)
        dist[order[a:b]], vote[order[a:b]] = d, v
    return dist, vote


def _nearest_large(win: np.ndarray, y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distance, label) of the nearest large pixel (``win`` != 255) to the pixels (y, x) of
    ``win``: a 5x5 chamfer distance transform; (inf, 255) where ``win`` has no large pixel."""
    import cv2

    small = cv2.compare(win, 255, cv2.CMP_EQ)
    if cv2.countNonZero(small) == small.size:
        return np.full(y.size, np.inf, np.float32), np.full(y.size, 255, np.uint8)
    d, nearest = cv2.distanceTransformWithLabels(small, cv2.DIST_L2, 5,
                                                 labelType=cv2.DIST_LABEL_PIXEL)
    # DIST_LABEL_PIXEL numbers the zero (large-region) pixels 1..n in raster order
    large_label = np.concatenate(([255], win[small == 0])).astype(np.uint8)
    return d[y, x], large_label[nearest[y, x]]


def knn_relabel(labels: np.ndarray, regions: Regions, min_region: int, k: int) -> np.ndarray:
    """Relabel regions smaller than ``min_region`` px by a vote of their nearest large regions.

    Args:
        labels: uint8 (H, W) label map that ``regions`` was computed from.
        regions: :func:`label_regions` of ``labels``.
        min_region: regions with fewer pixels are relabelled; 0 disables.
        k: number of votes per region (its ``k`` pixels closest to a large region).

    Returns:
        uint8 (H, W); ``labels`` itself when nothing changes.
    """

    if min_region <= 1:
        return labels
    area = regions.area
    small_lut = (area > 0) & (area < min_region)
    if not small_lut.any() or not (area >= min_region).any():
        return labels
    h, w = labels.shape
    nl, n_ids = regions.n_labels, area.size
    n_small = int(area[small_lut].sum())
    # label where a large region is, 255 where a small one is; padded so neighbours exist
    # (a reused buffer: a fresh 16 M px image costs ~30 ms of page faults)
    pad = scratch("pad", (h + 2, w + 2), np.uint8)
    pos, gid, near, rank, found = small_region_pixels(
        labels, regions.ids, small_lut.view(np.uint8), n_small, pad)
    if found != n_small:
        raise ValueError(f"regions do not match the labels ({found} != {n_small} small px)")
    big = pad[1:-1, 1:-1]
    # regions with fewer than min(k, area) pixels next to a large region need farther votes
    adjacent = np.bincount(gid[rank < 2], minlength=n_ids)
    enclosed_lut = small_lut & (adjacent < np.minimum(k, area))
    enclosed = enclosed_lut[gid]
    easy = ~enclosed & (rank < 2)
    new_lut = _vote(gid[easy], rank[easy], near[easy], k, nl, n_ids)
    if enclosed.any():
        sel = np.flatnonzero(enclosed)
        dist, vote = _enclosed_votes(pos[sel], gid[sel], big, (h, w))
        # one integer key: distance in 1/1024 px
        key = np.minimum(dist, 1e6) * 1024
        lut_far = _vote(gid[sel], key.astype(np.int64), vote, k, nl, n_ids)
        new_lut = np.where(enclosed_lut, lut_far, new_lut)
    new = new_lut[gid]
    keep = new != 255
    if not keep.any():
        return labels
    out = labels.copy()
    out.reshape(-1)[pos[keep]] = new[keep]
    return out
