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

from ._fast import MAX_U16, areas, lookup, scratch

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
    It skips value 0, so the labels are shifted by one first. ``ids`` become uint16 (half the
    bytes of every later pass, areas by ``calcHist``) unless there are more than 65535 regions.
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

    Args:
        pix: flat positions (raster order) of the pixels of the enclosed regions.
        gid: their region ids.
        big: uint8 (H, W): label where a large region is, 255 where a small one is.

    Returns:
        (distance float32, label uint8 (255 = none within MARGIN)) per pixel.
    """
    import cv2

    h, w = shape
    dist = np.full(pix.size, np.inf, np.float32)
    vote = np.full(pix.size, 255, np.uint8)
    order = np.argsort(gid, kind="stable")
    g = gid[order]
    bounds = np.flatnonzero(np.r_[True, g[1:] != g[:-1], True])
    ys, xs = pix // w, pix % w
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        sel = order[a:b]
        y, x = ys[sel], xs[sel]
        margin = FIRST_MARGIN
        while True:
            y0, x0 = max(int(y.min()) - margin, 0), max(int(x.min()) - margin, 0)
            y1, x1 = min(int(y.max()) + margin + 1, h), min(int(x.max()) + margin + 1, w)
            win = big[y0:y1, x0:x1]
            small = cv2.compare(win, 255, cv2.CMP_EQ)
            if cv2.countNonZero(small) < small.size or margin >= MARGIN:
                break
            margin *= 2
        if cv2.countNonZero(small) == small.size:
            continue
        d, nearest = cv2.distanceTransformWithLabels(small, cv2.DIST_L2, 5,
                                                     labelType=cv2.DIST_LABEL_PIXEL)
        # DIST_LABEL_PIXEL numbers the zero (large-region) pixels 1..n in raster order
        large_label = np.concatenate(([255], win[small == 0])).astype(np.uint8)
        dist[sel] = d[y - y0, x - x0]
        vote[sel] = large_label[nearest[y - y0, x - x0]]
    return dist, vote


def _first_large(neighbours: list[np.ndarray]) -> np.ndarray:
    """The first neighbour that is not 255 (scan order, as the distance transform's forward
    pass prefers the upper-left one among equidistant pixels); 255 when none is."""
    out = neighbours[-1].copy()
    for nb in neighbours[-2::-1]:
        np.copyto(out, nb, where=nb != 255)
    return out


def _nearest_neighbour(padded: np.ndarray, ppos: np.ndarray, wp: int,
                       max_label: int) -> tuple[np.ndarray, np.ndarray]:
    """The nearest large neighbour's label (255: none) and its rank (0: a 4-neighbour,
    1: only a diagonal one, 2: none) of each small pixel at ``ppos`` in the padded map
    (``max_label``: the largest label in it other than 255)."""
    sides = (-wp, -1, 1, wp)
    diags = (-wp - 1, -wp + 1, wp - 1, wp + 1)
    if max_label > 3:
        side = _first_large([padded[ppos + o] for o in sides])
        diag = _first_large([padded[ppos + o] for o in diags])
        near = np.where(side < 255, side, diag)
        return near, (side == 255).astype(np.uint8) + (near == 255)
    # labels 0..3 fit in 2 bits: neighbour i (scan order, sides first) becomes 4 i + label,
    # 255 (a small pixel) stays 255 under "| 4 i", so the minimum is the first large one
    best = None
    for i, o in enumerate(sides + diags):
        v = padded[ppos + o]
        v |= np.uint8(4 * i)
        best = v if best is None else np.minimum(best, v, out=best)
    none = best == 255
    rank = (best >= 16).astype(np.uint8) + none
    best &= np.uint8(3)
    best[none] = 255
    return best, rank


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
    import cv2

    if min_region <= 1:
        return labels
    area = regions.area
    small_lut = (area > 0) & (area < min_region)
    if not small_lut.any() or not (area >= min_region).any():
        return labels
    h, w = labels.shape
    nl, n_ids = regions.n_labels, area.size
    small = lookup(small_lut.view(np.uint8), regions.ids, scratch("u8a", labels.shape, np.uint8))
    pos = np.flatnonzero(small.view(bool))  # 0 / 1 as bool: 2x faster than on uint8
    gid = regions.ids.reshape(-1)[pos]
    # label where a large region is, 255 where a small one is; padded so neighbours exist
    # (a reused buffer with a 255 border: a fresh 16 M px image costs ~30 ms of page faults)
    pad = scratch("pad", (h + 2, w + 2), np.uint8)
    pad[0], pad[-1], pad[:, 0], pad[:, -1] = 255, 255, 255, 255
    big = pad[1:-1, 1:-1]
    np.bitwise_or(labels, cv2.compare(small, 0, cv2.CMP_NE, small), out=big)
    padded = pad.reshape(-1)
    wp = w + 2
    ppos = pos + (pos // w) * 2 + wp + 1
    near, rank = _nearest_neighbour(padded, ppos, wp, int(labels.max()))
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
