"""Where a weakly supervised map is probably wrong: uncertainty from the cached CAMs.

No second network pass: everything comes from the maps already computed (``multiscale_cam``
or a whole-slide CAM store).

Class probabilities per pixel: the foreground CAMs (each in ``[0, 1]``) and the background
channel ``(1 - max_c CAM) ** bg_exponent`` of the post-processing, divided by their sum.
Where a background (glass) mask is given, its pixels are background with certainty and the
tissue pixels share their probability among the foreground classes only.

Metrics (``UncertaintyParams.metric``), all in ``[0, 1]``, 1 = most uncertain:

- ``margin``: ``1 - (p1 - p2)`` of the two most probable classes (ilastik's uncertainty);
- ``entropy``: ``-sum p log p / log K`` over the ``K`` classes;
- ``disagreement``: the share of scales whose own most probable class differs from the
  fused map's (needs the per-scale maps, ``CamParams.keep_scales``).

:func:`expected_gain_map` is what the queue ranks by with ``score='expected_gain'``: per
pixel, how much correcting it is expected to raise the mean IoU of the foreground classes,
from the same probabilities and the expected size of each class (:func:`class_stats`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from . import WsssError
from .classes import BACKGROUND
from .params import UncertaintyMetric, UncertaintyParams
from .region import MaskGeometry

#: Rows of a whole-slide map processed at once (bounds the memory of big maps).
BLOCK_ROWS = 1024


@dataclass
class UncertaintyMap:
    """Uncertainty of a map and the class each pixel currently gets.

    Attributes:
        values: float32 ``(h, w)`` in ``[0, 1]`` (1 = most uncertain).
        labels: uint8 ``(h, w)`` most probable class, challenge encoding (0 tumor .. 3
            background).
        valid: bool ``(h, w)``, pixels that can be reviewed (not glass / not computed).
        geometry: where the map lies on its slide.
        metric: the metric that made ``values``.
    """

    values: np.ndarray
    labels: np.ndarray
    valid: np.ndarray
    geometry: MaskGeometry
    metric: UncertaintyMetric


def class_probabilities(cams: np.ndarray, bg_exponent: float = 8.0,
                        background: np.ndarray | None = None) -> np.ndarray:
    """float32 ``(C + 1, h, w)`` class probabilities (background last) of CAMs ``(C, h, w)``."""
    fg = np.clip(np.asarray(cams, dtype=np.float32), 0.0, 1.0)
    if fg.ndim != 3:
        raise WsssError(f"expected CAMs (C, h, w), got shape {fg.shape}")
    bg = (1.0 - fg.max(axis=0)) ** float(bg_exponent) if fg.shape[0] else np.ones(fg.shape[1:])
    if background is not None:
        glass = np.asarray(background, bool)
        if glass.shape != fg.shape[1:]:
            raise WsssError(f"background mask shape {glass.shape} != map shape {fg.shape[1:]}")
        bg = glass.astype(np.float32)
        fg = np.where(glass[None], 0.0, fg)
        # tissue pixels without any CAM evidence: uniform over the foreground classes
        empty = ~glass & (fg.sum(axis=0) <= 0)
        fg[:, empty] = 1.0
    p = np.concatenate([fg, bg[None].astype(np.float32)])
    total = p.sum(axis=0, keepdims=True)
    return (p / np.maximum(total, 1e-12)).astype(np.float32)


def _labels_of(p: np.ndarray) -> np.ndarray:
    lab = p.argmax(axis=0).astype(np.uint8)
    lab[lab == p.shape[0] - 1] = BACKGROUND
    return lab


def _metric(p: np.ndarray, metric: UncertaintyMetric, scale_p: list[np.ndarray] | None,
            n_classes: int) -> np.ndarray:
    if metric == UncertaintyMetric.MARGIN:
        top2 = np.partition(p, p.shape[0] - 2, axis=0)[-2:]
        return (1.0 - (top2[1] - top2[0])).astype(np.float32)
    if metric == UncertaintyMetric.ENTROPY:
        with np.errstate(divide="ignore", invalid="ignore"):
            h = -np.nansum(np.where(p > 0, p * np.log(p), 0.0), axis=0)
        return (h / np.log(max(n_classes, 2))).astype(np.float32)
    fused = p.argmax(axis=0)
    differ = np.zeros(p.shape[1:], np.float32)
    for sp in scale_p or []:
        differ += sp.argmax(axis=0) != fused
    return differ / max(len(scale_p or []), 1)


def _blocks(cams: Any, bg_exponent: float, background: np.ndarray | None):
    """``(row slice, CAM block, glass block or None, probabilities)`` of CAMs ``(C, h, w)``
    (numpy, zarr or dask), :data:`BLOCK_ROWS` rows at a time: only a block is in memory."""
    h = cams.shape[1]
    for r0 in range(0, h, BLOCK_ROWS):
        r1 = min(h, r0 + BLOCK_ROWS)
        block = np.asarray(cams[:, r0:r1], np.float32)
        bg = None if background is None else np.asarray(background[r0:r1], bool)
        yield slice(r0, r1), block, bg, class_probabilities(block, bg_exponent, bg)


def class_stats(cams: Any, bg_exponent: float = 8.0,
                background: np.ndarray | None = None) -> np.ndarray:
    """float64 ``(2, C + 1)``: every class's expected union and expected true positives (px).

    With the most probable class as the prediction and the probabilities as the chance of
    each true class: union_c = #(predicted c) + sum of p_c where c is not predicted, true
    positives_c = sum of p_c where c is predicted. Stats of several images add up (sum them
    to rank the items of several images together, as one slide's).
    """
    out = np.zeros((2, int(cams.shape[0]) + 1))
    for *_, p in _blocks(cams, bg_exponent, background):
        k = p.shape[0]
        a = p.argmax(axis=0).ravel()
        flat = p.reshape(k, -1).astype(np.float64)
        tp = np.bincount(a, weights=flat[a, np.arange(a.size)], minlength=k)
        out[0] += np.bincount(a, minlength=k) + flat.sum(axis=1) - tp
        out[1] += tp
    return out


def expected_gain_map(cams: Any, stats: np.ndarray, bg_exponent: float = 8.0,
                      background: np.ndarray | None = None) -> np.ndarray:
    """float32 ``(h, w)`` in ``[0, 1]``: the expected mIoU gain of correcting each pixel.

    A pixel predicted ``a`` whose true class is ``b`` adds, once corrected, a true positive
    to ``b`` (IoU_b rises by 1 / union_b) and removes a false positive of ``a`` (IoU_a rises
    by IoU_a / union_a). Weighted by the probabilities of the true class:
    ``sum_{b != a} p_b / U_b + (1 - p_a) IoU_a / U_a`` over the foreground (CAM) classes,
    the background channel counting 0 (it is not in the mIoU); unions and IoUs from
    ``stats`` (:func:`class_stats` of the whole map, or of everything ranked together).
    Errors of a rare class weigh more: its union is small. Scaled by ``min_c U_c / 2`` (one
    constant for the map) so it lies in ``[0, 1]``; the mean over an item is the gain per
    area looked at.
    """
    stats = np.asarray(stats, np.float64)
    n_fg = int(cams.shape[0])
    union = np.maximum(stats[0], 1.0)
    w = np.zeros(n_fg + 1)
    w[:n_fg] = union[:n_fg].min() / union[:n_fg]
    w_fp = w * np.clip(stats[1] / union, 0.0, 1.0)
    out = np.zeros(tuple(cams.shape[1:]), np.float32)
    for rows, _, _, p in _blocks(cams, bg_exponent, background):
        a = p.argmax(axis=0)
        pa = np.take_along_axis(p, a[None], axis=0)[0]
        gain = np.tensordot(w, p, axes=1) - pa * w[a] + (1.0 - pa) * w_fp[a]
        out[rows] = np.clip(gain / 2.0, 0.0, 1.0)
    return out


def uncertainty_map(cams: Any, params: UncertaintyParams | None = None,
                    scale_cams: Any = None, background: np.ndarray | None = None,
                    geometry: MaskGeometry | None = None) -> UncertaintyMap:
    """The uncertainty of CAMs ``(C, h, w)`` (numpy, zarr or dask), block by block.

    Args:
        cams: normalised CAMs in ``[0, 1]`` (``CamResult.cams`` or ``SlideCams.cams``).
        params: :class:`UncertaintyParams` (metric, background exponent).
        scale_cams: ``(S, C, h, w)`` per-scale maps, needed by the ``disagreement`` metric.
        background: bool ``(h, w)`` glass mask, if known (its pixels are not reviewable).
        geometry: where the maps lie on the slide (default: level 0, origin 0).

    Raises:
        WsssError: ``disagreement`` asked of maps stored without their per-scale maps.
    """
    params = params or UncertaintyParams()
    shape = tuple(cams.shape)
    if len(shape) != 3:
        raise WsssError(f"expected CAMs (C, h, w), got shape {shape}")
    if params.metric == UncertaintyMetric.DISAGREEMENT:
        if scale_cams is None:
            raise WsssError("these CAMs were stored without their per-scale maps: recompute "
                            "them with --keep-scales (CamParams.keep_scales) or choose the "
                            "margin or entropy metric")
        if tuple(scale_cams.shape[1:]) != shape:
            raise WsssError(f"per-scale maps {tuple(scale_cams.shape)} do not match the CAMs "
                            f"{shape}")
    h, w = shape[1:]
    values = np.zeros((h, w), np.float32)
    labels = np.zeros((h, w), np.uint8)
    valid = np.zeros((h, w), bool)
    n_classes = shape[0] + 1
    for rows, block, bg, p in _blocks(cams, params.bg_exponent, background):
        scale_p = None
        if params.metric == UncertaintyMetric.DISAGREEMENT:
            scale_p = [class_probabilities(np.asarray(scale_cams[s, :, rows], np.float32),
                                           params.bg_exponent, bg)
                       for s in range(scale_cams.shape[0])]
        k = n_classes - 1 if bg is not None else n_classes
        values[rows] = _metric(p, params.metric, scale_p, k)
        labels[rows] = _labels_of(p)
        valid[rows] = block.max(axis=0) > 0 if bg is None else ~bg
    values[~valid] = 0.0
    return UncertaintyMap(np.clip(values, 0.0, 1.0), labels, valid,
                          geometry or MaskGeometry(), params.metric)


def slide_geometry(slide_cams: Any) -> MaskGeometry:
    """The :class:`MaskGeometry` of a ``SlideCams`` (origin, downsample, slide mpp, name)."""
    from dataclasses import replace

    ident = dict(getattr(slide_cams, "slide_id", {}) or {})
    geo = slide_cams.geometry
    mpp = geo.mpp if geo.mpp is not None else ident.get("mpp")
    name = ident.get("name") or geo.slide
    return replace(geo, mpp=float(mpp) if mpp else None, slide=str(name))


def slide_uncertainty(slide_cams: Any, params: UncertaintyParams | None = None,
                      background: np.ndarray | None = None) -> UncertaintyMap:
    """:func:`uncertainty_map` of a whole-slide CAM store (``SlideCams``)."""
    return uncertainty_map(slide_cams.cams, params, scale_cams=slide_cams.scale_cams,
                           background=background, geometry=slide_geometry(slide_cams))
