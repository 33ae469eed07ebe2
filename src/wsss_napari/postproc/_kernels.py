"""Compiled per-pixel loops (numba) for the steps numpy does in several full-image passes.

A lookup ``lut[ids]`` over a uint16 id image costs numpy an ``intp`` copy of every id
(18 ms at 4096^2); a plain loop costs 7 ms. The kNN step's front end (which pixels belong
to small regions, their region ids, a padded "large label or 255" map and each small
pixel's nearest large neighbour) took six numpy passes and eight gathers (~70 ms at
4096^2); here it is one pass over the image and one over the small pixels.

Compiled on first use (about a second per function and id dtype) and cached on disk
(numba's ``cache=True``), so later processes load them in milliseconds.
"""

from __future__ import annotations

import numpy as np
from numba import njit

#: Neighbour order for "the nearest large neighbour": the 4 sides in scan order (up, left,
#: right, down), then the diagonals in scan order. A side neighbour is at distance 1, a
#: diagonal one at sqrt(2); among equidistant ones the first in scan order wins, as in the
#: forward pass of a distance transform.
_DY = np.array([-1, 0, 0, 1, -1, -1, 1, 1], np.int64)
_DX = np.array([0, -1, 1, 0, -1, 1, -1, 1], np.int64)


@njit(nogil=True, cache=True)
def take(lut: np.ndarray, ids: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover
    """``out[...] = lut[ids]`` for 2-D ``ids``; ids past the end read the last entry."""
    h, w = ids.shape
    last = lut.size - 1
    for y in range(h):
        for x in range(w):
            out[y, x] = lut[min(ids[y, x], last)]


@njit(nogil=True, cache=True)
def small_region_pixels(labels: np.ndarray, ids: np.ndarray, small: np.ndarray, n_small: int,
                        pad: np.ndarray):  # pragma: no cover
    """The pixels of small regions, and the nearest large neighbour of each.

    Args:
        labels: uint8 (H, W) labels (255 is no label).
        ids: (H, W) region ids; ``small[id]`` is 1 for a small region's id.
        n_small: the number of small-region pixels (the sum of their areas).
        pad: uint8 (H + 2, W + 2) written here: the label where a large region is, 255 where
            a small one is and on the one-pixel border.

    Returns:
        (pos int64 flat positions in raster order, gid region ids, near uint8 the nearest
        large neighbour's label (255: none among the 8), rank uint8: 0 a side neighbour,
        1 only a diagonal one, 2 none).
    """
    h, w = labels.shape
    pos = np.empty(n_small, np.int64)
    gid = np.empty(n_small, ids.dtype)
    pad[0, :] = 255
    pad[h + 1, :] = 255
    pad[:, 0] = 255
    pad[:, w + 1] = 255
    j = 0
    for y in range(h):
        for x in range(w):
            g = ids[y, x]
            if g < small.size and small[g]:
                pad[y + 1, x + 1] = 255
                if j < n_small:
                    pos[j] = y * w + x
                    gid[j] = g
                j += 1
            else:
                pad[y + 1, x + 1] = labels[y, x]
    near = np.full(n_small, 255, np.uint8)
    rank = np.full(n_small, 2, np.uint8)
    for i in range(min(j, n_small)):
        y = pos[i] // w + 1
        x = pos[i] % w + 1
        for o in range(8):
            v = pad[y + _DY[o], x + _DX[o]]
            if v != 255:
                near[i] = v
                rank[i] = 0 if o < 4 else 1
                break
    return pos[:j], gid[:j], near[:j], rank[:j], j


@njit(nogil=True, cache=True)
def argmax3(c0: np.ndarray, c1: np.ndarray, c2: np.ndarray, i0: int, i1: int, i2: int,
            labels: np.ndarray, best: np.ndarray) -> None:  # pragma: no cover
    """Per pixel, which of three channels (class ids ``i0 < i1 < i2``) is largest (ties: the
    earlier one, as ``np.argmax``; NaN never wins) into ``labels``, and its value into ``best``.

    One pass reading each channel once (23 ms at 4096^2; a loop over a channel index array
    does not vectorise: 48 ms). Two channels: pass the second one twice.
    """
    h, w = labels.shape
    for y in range(h):
        for x in range(w):
            m = c0[y, x]
            lab = i0
            v = c1[y, x]
            if v > m:
                m = v
                lab = i1
            v = c2[y, x]
            if v > m:
                m = v
                lab = i2
            labels[y, x] = lab
            best[y, x] = m


@njit(nogil=True, cache=True)
def count_ids(ids: np.ndarray, n: int) -> np.ndarray:  # pragma: no cover
    """Pixels of each id 0 .. n - 1 (ids >= n are not counted).

    Counts go in per run of equal ids along a row (neighbours mostly share an id: one
    memory update per run, not per pixel; 8-12 vs 31 ms at 4096^2).
    """
    counts = np.zeros(n, np.int64)
    h, w = ids.shape
    for y in range(h):
        prev = ids[y, 0]
        run = 0
        for x in range(w):
            g = ids[y, x]
            if g == prev:
                run += 1
            else:
                if prev < n:
                    counts[prev] += run
                prev = g
                run = 1
        if w and prev < n:
            counts[prev] += run
    return counts
