"""A straightforward implementation of the same rules (scikit-image / scipy), for checking.

Written for clarity, not speed: ``np.argmax`` over a stacked background channel computed with
a power, ``skimage.morphology`` for glass, a Python loop over sub-patches, ``skimage.measure``
for regions and a KD-tree over every large-region pixel for the kNN vote. The tests compare
the fast chain with it, and ``benchmarks/bench_postproc.py`` measures both.
"""

from __future__ import annotations

import numpy as np

from ..classes import BACKGROUND, NORMAL, STROMA, TUMOR
from ..params import PostprocParams, WhiteMethod
from .background import allowed_classes
from .glass import threshold_whiteness, whiteness


def reference_postprocess(cams: np.ndarray, params: PostprocParams, image=None, scores=None,
                          present=None, background=None) -> np.ndarray:
    """Same contract as :func:`wsss_napari.postproc.postprocess`."""
    from skimage import measure, morphology

    p = params
    c, h, w = cams.shape
    allowed = allowed_classes(c, scores, p.score_threshold, present)
    stack = np.full((BACKGROUND + 1, h, w), -np.inf)
    for i in np.flatnonzero(allowed):
        stack[i] = cams[i]
    mx = np.max(stack[:c], axis=0) if allowed.any() else np.zeros((h, w))
    stack[BACKGROUND] = np.power(1.0 - mx.astype(np.float64), p.bg_exponent)
    forced = np.zeros((h, w), bool)
    if image is not None and WhiteMethod(p.white_method) is not WhiteMethod.NONE:
        g = threshold_whiteness(whiteness(image, p.white_method), p.white_method,
                                p.white_threshold)
        if p.white_min_size > 1:
            g = morphology.remove_small_objects(g, max_size=p.white_min_size - 1, connectivity=2)
            g = morphology.remove_small_holes(g, max_size=p.white_min_size - 1, connectivity=2)
        forced |= g
    if background is not None:
        forced |= np.asarray(background) != 0
    lab = np.argmax(stack, axis=0).astype(np.uint8)
    lab[forced] = BACKGROUND

    if p.min_area_pct > 0:  # area rule, one sub-patch at a time
        out = lab.copy()
        for y in range(0, h, p.area_patch):
            for x in range(0, w, p.area_patch):
                blk = lab[y:y + p.area_patch, x:x + p.area_patch]
                n = np.bincount(blk.ravel(), minlength=4)[:c]
                drop = (n > 0) & (100.0 * n < p.min_area_pct * blk.size)
                if not drop.any():
                    continue
                vals = stack[:, y:y + p.area_patch, x:x + p.area_patch].copy()
                vals[:c][drop] = -np.inf
                new = np.argmax(vals, axis=0)
                sel = np.isin(blk, np.flatnonzero(drop))
                out[y:y + p.area_patch, x:x + p.area_patch][sel] = new[sel]
        lab = out

    if p.island_rule and p.island_max_size > 0 and (lab == NORMAL).any():
        cc = measure.label(lab != NORMAL, connectivity=2, background=0)
        for r in measure.regionprops(cc):
            y0, x0, y1, x1 = r.bbox
            if r.area <= p.island_max_size and y0 > 0 and x0 > 0 and y1 < h and x1 < w:
                sel = (cc == r.label) & ((lab == TUMOR) | (lab == STROMA))
                lab[sel] = NORMAL
    if p.normal_min_size > 0:
        cc = measure.label(lab == NORMAL, connectivity=2, background=0)
        sizes = np.bincount(cc.ravel())
        small = np.flatnonzero(sizes < p.normal_min_size)
        lab[np.isin(cc, small[small > 0])] = STROMA

    if p.min_region > 1:
        lab = _reference_knn(lab, p.min_region, p.knn_k)
    lab[forced] = BACKGROUND
    return lab


def _reference_knn(lab: np.ndarray, min_region: int, k: int) -> np.ndarray:
    from scipy.spatial import cKDTree
    from skimage import measure

    h, w = lab.shape
    region = np.zeros((h, w), np.int64)
    small = np.zeros((h, w), bool)
    for c in range(BACKGROUND + 1):
        cc = measure.label(lab == c, connectivity=2, background=0)
        sizes = np.bincount(cc.ravel())
        sel = (cc > 0) & (sizes[cc] < min_region)
        small |= sel
        region[sel] = cc[sel] * 4 + c
    if not small.any() or small.all():
        return lab
    ly, lx = np.nonzero(~small)
    sy, sx = np.nonzero(small)
    dist, idx = cKDTree(np.column_stack([ly, lx])).query(np.column_stack([sy, sx]), k=1)
    vote = lab[ly[idx], lx[idx]]
    rid = region[sy, sx]
    pos = sy * w + sx
    order = np.lexsort((pos, dist, rid))
    rid, vote = rid[order], vote[order]
    bounds = np.flatnonzero(np.r_[True, rid[1:] != rid[:-1], True])
    ids, winners = [], []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        ids.append(rid[a])
        winners.append(np.argmax(np.bincount(vote[a:min(b, a + k)], minlength=4)))
    ids, winners = np.asarray(ids), np.asarray(winners, np.uint8)
    out = lab.copy()
    out[sy, sx] = winners[np.searchsorted(ids, region[sy, sx])]
    return out
