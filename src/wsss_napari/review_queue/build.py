"""Cut an uncertainty map into queue items and rank them (:func:`build_queue`)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..classes import LABEL_NAMES
from ..params import QueueMode, QueueScore, UncertaintyParams
from ..region import Region
from ..uncertainty import UncertaintyMap, class_probabilities, class_stats, expected_gain_map
from .items import QueueItem
from .queue import ReviewQueue


def _candidates(umap: UncertaintyMap, params: UncertaintyParams, t: int) -> tuple[Any, int]:
    """Integer item labels ``(h, w)`` (0 = none) and their count."""
    from scipy import ndimage

    h, w = umap.values.shape
    tiles = (np.arange(h)[:, None] // t) * math.ceil(w / t) + (np.arange(w)[None, :] // t)
    if params.mode == QueueMode.TILE:
        keys = np.where(umap.valid, tiles + 1, 0)
    else:
        comp, _ = ndimage.label(umap.valid & (umap.values > params.threshold))
        keys = np.where(comp > 0, comp.astype(np.int64) * (tiles.max() + 1) + tiles + 1, 0)
    flat = keys.ravel()
    nz = flat > 0
    lab = np.zeros(flat.shape, np.int64)
    if nz.any():
        _, inv = np.unique(flat[nz], return_inverse=True)
        lab[nz] = inv + 1
    return lab.reshape(h, w), int(lab.max())


def _ranked_values(umap: UncertaintyMap, cams: Any, params: UncertaintyParams,
                   background: np.ndarray | None, stats: np.ndarray | None) -> np.ndarray:
    """Per-pixel values whose item means rank the queue (``params.score``)."""
    if params.score != QueueScore.EXPECTED_GAIN:
        return umap.values
    if stats is None:
        stats = class_stats(cams, params.bg_exponent, background)
    return expected_gain_map(cams, stats, params.bg_exponent, background)


def build_queue(umap: UncertaintyMap, cams: Any, params: UncertaintyParams | None = None,
                pixel_scale: float = 1.0, background: np.ndarray | None = None,
                slide_id: dict[str, Any] | None = None, cams_key: str = "",
                stats: np.ndarray | None = None) -> ReviewQueue:
    """Rank the uncertain regions (or tiles) of a map: by their mean uncertainty, or
    (``score='expected_gain'``) by the mean of :func:`~wsss_napari.uncertainty.
    expected_gain_map`, the expected mIoU gain of correcting them per area.

    Args:
        umap: the map's uncertainty (:func:`~wsss_napari.uncertainty.uncertainty_map`).
        cams: the CAMs ``(C, h, w)`` it was computed from (for each item's probabilities).
        params: mode, threshold, tile and minimum size (model px), queue length.
        pixel_scale: model-resolution pixels per map pixel (``SlideCams.out_stride``).
        background: the glass mask used for ``umap``, if any.
        slide_id: identity of the slide (saved, and checked when the queue is reopened).
        cams_key: the CAM store's cache key (saved for provenance).
        stats: expected_gain only: the class sizes (:func:`~wsss_napari.uncertainty.
            class_stats`) of everything ranked together; default: those of ``cams``.
    """
    from scipy import ndimage

    params = params or UncertaintyParams()
    t = max(1, int(round(params.tile / pixel_scale)))
    min_px = params.min_area / float(pixel_scale) ** 2
    lab, n = _candidates(umap, params, t)
    items: list[QueueItem] = []
    if n:
        idx = np.arange(1, n + 1)
        area = ndimage.sum_labels(np.ones_like(umap.values), lab, idx)
        mean_u = ndimage.mean(_ranked_values(umap, cams, params, background, stats), lab, idx)
        objects = ndimage.find_objects(lab)
        order = np.lexsort((idx, -mean_u))
        geo = umap.geometry
        for k in order:
            if area[k] < max(min_px, 1) or objects[k] is None:
                continue
            sl = objects[k]
            m = lab[sl] == k + 1
            r0, c0 = sl[0].start, sl[1].start
            bh, bw = sl[0].stop - r0, sl[1].stop - c0
            block = np.asarray(cams[:, sl[0], sl[1]], np.float32)
            bgm = None if background is None else np.asarray(background[sl], bool)
            p = class_probabilities(block, params.bg_exponent, bgm)[:, m].mean(axis=1)
            cls = int(np.bincount(umap.labels[sl][m], minlength=len(LABEL_NAMES)).argmax())
            others = p.copy()
            others[cls] = -1.0
            y0, x0 = geo.to_level0(r0, c0)
            region = Region(y=y0, x=x0, height=bh * geo.downsample, width=bw * geo.downsample)
            a_mm2 = geo.area_mm2(int(m.sum()))
            items.append(QueueItem(
                id=f"r{r0}c{c0}n{len(items)}", rank=len(items) + 1, box=(r0, c0, bh, bw), mask=m,
                region=region, area_px=int(m.sum()),
                area_mm2=None if a_mm2 is None else round(a_mm2, 6), cls=cls,
                runner_up=int(others.argmax()), probs=tuple(round(float(v), 4) for v in p),
                score=float(f"{float(mean_u[k]):.6g}")))
            if params.max_items and len(items) >= params.max_items:
                break
    return ReviewQueue(items=items, geometry=umap.geometry, params=params,
                       slide_id=dict(slide_id or {}), cams_key=cams_key,
                       map_shape=tuple(umap.values.shape))  # type: ignore[arg-type]


def slide_queue(slide_cams: Any, params: UncertaintyParams | None = None,
                background: np.ndarray | None = None) -> tuple[ReviewQueue, UncertaintyMap]:
    """Uncertainty map and queue of a whole-slide CAM store (``SlideCams``)."""
    import zarr

    from ..uncertainty import slide_uncertainty

    params = params or UncertaintyParams()
    umap = slide_uncertainty(slide_cams, params, background=background)
    try:
        key = str(zarr.open_group(str(slide_cams.path), mode="r").attrs.get("key", ""))
    except Exception:  # noqa: BLE001 - provenance only
        key = ""
    queue = build_queue(umap, slide_cams.cams, params, pixel_scale=slide_cams.out_stride,
                        background=background, slide_id=slide_cams.slide_id, cams_key=key)
    return queue, umap


