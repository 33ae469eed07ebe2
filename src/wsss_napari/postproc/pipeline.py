"""The post-processing chain, and :class:`LiveTuner` which caches it for live sliders.

Chain (each stage a pure function of the previous one and its own parameters):

1. allowed classes   ``score_threshold`` (image-level scores) and ``present``
2. foreground argmax best allowed class and its CAM value per pixel
3. glass             ``white_method``, ``white_threshold``, ``white_min_size``
4. background        ``bg_exponent``: background where ``(1 - max CAM)^y`` wins, or forced
5. area rule         ``area_patch``, ``min_area_pct``
6. islands           ``island_rule``, ``island_max_size``, ``normal_min_size``
7. regions           connected components (no parameter)
8. kNN cleanup       ``min_region``, ``knn_k``
9. forced background glass and the explicit background mask always end as background

:class:`LiveTuner` keeps the last result of every stage keyed by the parameters it depends
on, so moving one slider recomputes only the stages downstream of it (the exponent: from
stage 4; ``min_region``: stage 8 only). :func:`postprocess` is a one-shot tuner.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from .. import WsssError
from ..classes import BACKGROUND
from ..params import PostprocParams, WhiteMethod
from ..region import MaskGeometry, Region
from ._fast import in_background, release_scratch
from .area import min_area_rule
from .background import (
    allowed_classes,
    background_code,
    base_labels,
    foreground_argmax,
    with_background,
)
from .glass import remove_small, threshold_whiteness, whiteness
from .islands import islands_in_normal, small_normal_to_stroma
from .knn import knn_relabel, label_regions

N_LABELS = BACKGROUND + 1


class Cancelled(Exception):  # noqa: N818 - reads as what happened
    """Raised by :meth:`LiveTuner.run` when its ``should_stop`` callable returned True."""


def postprocess(cams: np.ndarray, params: PostprocParams, image: np.ndarray | None = None,
                scores: np.ndarray | None = None, present: np.ndarray | None = None,
                background: np.ndarray | None = None, pixel_scale: float = 1.0) -> np.ndarray:
    """CAMs -> label mask (uint8 (H, W): 0 tumor, 1 stroma, 2 normal, 3 background).

    Args:
        cams: float32 (C, H, W) class activation maps in [0, 1], C <= 3.
        params: the post-processing parameters.
        image: uint8 RGB (H, W, 3) for glass detection (skipped when None).
        scores: image-level class scores (C,) for ``score_threshold`` (skipped when None).
        present: bool (C,) classes known to be present (e.g. a training patch's labels).
        background: bool / 0-1 (H, W): forced background (the challenge's background mask).
        pixel_scale: model-resolution pixels per CAM pixel (see :class:`LiveTuner`).
    """
    return LiveTuner(cams, image=image, scores=scores, background=background,
                     present=present, pixel_scale=pixel_scale).run(params)


_warm_lock = threading.Lock()
_warm_thread: threading.Thread | None = None


def warm_up(background: bool = True) -> threading.Thread | None:
    """Compile (or load from numba's disk cache) the chain's compiled loops on a tiny input.

    The first run of the chain in a process otherwise waits for them: ~2 s the first time
    ever, ~0.3 s when cached. The tuning widget calls this when it opens. Idempotent: one
    warm-up per process, on a daemon thread.

    Args:
        background: return that thread at once; False: wait for it (returns None).
    """
    global _warm_thread
    with _warm_lock:
        if _warm_thread is None:
            _warm_thread = threading.Thread(target=_warm_work, name="wsss-warm-up", daemon=True)
            _warm_thread.start()
        thread = _warm_thread
    if background:
        return thread
    thread.join()
    return None


def _warm_work() -> None:
    rng = np.random.default_rng(0)
    cams = rng.random((3, 48, 48)).astype(np.float32)
    image = np.full((48, 48, 3), 120, np.uint8)
    image[:8] = 250  # some glass, so its rules run too
    postprocess(cams, PostprocParams(area_patch=16, min_region=20, white_min_size=4),
                image=image, scores=np.ones(3))


class LiveTuner:
    """Post-processing of one set of CAMs, recomputing only what a parameter change needs.

    Thread-safe: one run at a time (a second caller waits for the first, which stops at its
    next stage boundary when its ``should_stop`` says so). Typical widget use::

        tuner = LiveTuner(cams, image=rgb, scores=scores)
        mask = tuner.preview(params, max_size=1024, should_stop=is_stale)   # while dragging
        mask = tuner.run(params, should_stop=is_stale)                       # on release

    Args:
        cams: float32 (C, H, W) CAMs in [0, 1] (any array-like; read once).
        image: uint8 RGB (H, W, 3) for glass detection, or None.
        scores: image-level class scores (C,), or None.
        background: (H, W) forced-background mask (nonzero = background), or None.
        present: default ``present`` vector for :meth:`run` (bool (C,)), or None.
        geometry: where the maps lie on the slide (:class:`~wsss_napari.region.MaskGeometry`;
            default: a level-0 map at the slide's origin). Regions asked of :meth:`run` are
            level-0 :class:`~wsss_napari.region.Region` objects, and the map origin
            (``geometry.y / downsample``) anchors the area rule's sub-patch grid, so a crop
            gets the same grid as the whole.
        pixel_scale: model-resolution pixels per CAM pixel. The pixel-count parameters
            (``area_patch``, ``min_region``, ``island_max_size``, ``normal_min_size``,
            ``white_min_size``) are in pixels at the model's resolution (that of its training
            patches), so they mean the same tissue area on any map: whole-slide maps are
            stored at ``1 / CamParams.out_stride`` of it and pass ``out_stride`` here.
    """

    def __init__(self, cams: Any, image: Any = None, scores: Any = None, background: Any = None,
                 present: Any = None, geometry: MaskGeometry | None = None,
                 pixel_scale: float = 1.0) -> None:
        cams = np.asarray(cams)
        if cams.ndim != 3 or not 1 <= cams.shape[0] <= BACKGROUND:
            raise WsssError(f"CAMs must be (C, H, W) with 1 <= C <= 3, got shape {cams.shape}")
        if cams.dtype != np.float32:
            cams = cams.astype(np.float32)
        self.cams = cams
        self.shape: tuple[int, int] = tuple(cams.shape[1:])  # type: ignore[assignment]
        self.image = None if image is None else self._check(np.asarray(image), "image", 3)
        self.background = None if background is None else \
            self._check(np.asarray(background), "background mask", 2) != 0
        self.scores = None if scores is None else np.asarray(scores, np.float64).reshape(-1)
        if self.scores is not None and self.scores.size != cams.shape[0]:
            raise WsssError(f"{self.scores.size} scores given for {cams.shape[0]} CAM channels")
        self.present = present
        self.geometry = geometry or MaskGeometry()
        g = self.geometry
        self._grid_origin = (int(round(g.y / g.downsample)), int(round(g.x / g.downsample)))
        self.pixel_scale = float(pixel_scale)
        if not (math.isfinite(self.pixel_scale) and self.pixel_scale > 0):
            raise WsssError(f"pixel_scale must be a positive number, not {pixel_scale!r}")
        self._lock = threading.RLock()
        self._cache: dict[str, tuple[Any, Any]] = {}
        self._forced_cache: dict[tuple | None, np.ndarray | None] = {}
        self._white_cache: dict[str, np.ndarray] = {}
        self._children: dict[int, LiveTuner] = {}
        self._region_child: tuple[Any, LiveTuner] | None = None

    def _check(self, arr: np.ndarray, what: str, ndim: int) -> np.ndarray:
        if arr.ndim < 2 or arr.shape[:2] != self.shape or arr.ndim != ndim \
                or (ndim == 3 and arr.shape[2] < 3):
            raise WsssError(f"{what} of shape {arr.shape} does not match the CAMs' "
                            f"{self.shape[0]} x {self.shape[1]} px")
        return arr

    # ------------------------------------------------------------------ public API

    def run(self, params: PostprocParams, present: Any = None,
            region: Region | None = None, downsample: int = 1,
            should_stop: Callable[[], bool] | None = None) -> np.ndarray:
        """The label mask for ``params`` (uint8, a fresh array the caller may keep).

        Args:
            params: post-processing parameters.
            present: bool (C,) classes allowed (overrides the constructor's ``present``).
            region: a level-0 :class:`~wsss_napari.region.Region`: compute only the map
                pixels that cover it (through :attr:`geometry`).
            downsample: integer factor: compute on CAMs shrunk by it (pixel-count parameters
                are scaled to match, so the result looks like the full-resolution one).
            should_stop: called between stages; when it returns True, :class:`Cancelled`
                is raised (the widget's "a newer request exists").

        Returns:
            uint8 mask: (H, W), or the region's shape, divided by ``downsample`` (rounded up).
        """
        downsample = max(1, int(downsample))
        with self._lock:
            if downsample > 1:
                child = self._downsampled(downsample)
                return child._run_scaled(params, present, region, downsample, should_stop)
            return self._run_scaled(params, present, region, 1, should_stop)

    def preview(self, params: PostprocParams, max_size: int = 1024, present: Any = None,
                region: Region | None = None,
                should_stop: Callable[[], bool] | None = None) -> np.ndarray:
        """A quick mask at most ``max_size`` px a side (see :meth:`preview_downsample`)."""
        ds = self.preview_downsample(max_size, region)
        return self.run(params, present=present, region=region, downsample=ds,
                        should_stop=should_stop)

    def preview_downsample(self, max_size: int, region: Region | None = None) -> int:
        """The integer factor :meth:`preview` uses so the result fits in ``max_size`` px."""
        h, w = self.shape if region is None else self._window(region)[2:]
        return max(1, math.ceil(max(h, w) / max(1, int(max_size))))

    def clear(self) -> None:
        """Forget every cached intermediate (frees memory; the next run is a cold one)."""
        with self._lock:
            self._cache.clear()
            self._forced_cache.clear()
            self._white_cache.clear()
            self._children.clear()
            self._region_child = None
        release_scratch()

    # ------------------------------------------------------------------ internals

    def _downsampled(self, factor: int) -> LiveTuner:
        child = self._children.get(factor)
        if child is None:
            import cv2

            h, w = (-(-s // factor) for s in self.shape)

            def shrink(a: np.ndarray, interp: int) -> np.ndarray:
                return cv2.resize(np.ascontiguousarray(a), (w, h), interpolation=interp)

            cams = np.stack([shrink(c, cv2.INTER_AREA) for c in self.cams])
            image = None if self.image is None else shrink(self.image[..., :3], cv2.INTER_AREA)
            bg = None if self.background is None else \
                shrink(self.background.view(np.uint8) * np.uint8(255), cv2.INTER_AREA) > 127
            g = self.geometry
            child = LiveTuner(cams, image=image, scores=self.scores, background=bg,
                              present=self.present,
                              geometry=replace(g, downsample=g.downsample * factor),
                              pixel_scale=self.pixel_scale)
            self._children[factor] = child
        return child

    def _upsampled(self) -> LiveTuner:
        """This tuner's inputs repeated 2 x 2 (for maps too small for OpenCV's scalar ops)."""
        child = self._children.get(-2)
        if child is None:
            def up(a: Any) -> Any:
                return None if a is None else np.repeat(np.repeat(a, 2, axis=0), 2, axis=1)

            child = LiveTuner(np.repeat(np.repeat(self.cams, 2, axis=1), 2, axis=2),
                              image=up(self.image), scores=self.scores,
                              background=up(self.background), present=self.present,
                              geometry=replace(self.geometry,
                                               downsample=self.geometry.downsample / 2),
                              pixel_scale=self.pixel_scale)
            self._children[-2] = child
        return child

    def _window(self, region: Region) -> tuple[int, int, int, int]:
        """Map rows/columns ``(y0, x0, h, w)`` covering level-0 ``region``, clipped."""
        if not isinstance(region, Region):
            raise WsssError(f"region must be a wsss_napari.region.Region (level-0 px), not "
                            f"{region!r}")
        ys, xs = self.geometry.slices(region)
        h, w = self.shape
        y0, x0, y1, x1 = max(0, ys.start), max(0, xs.start), min(h, ys.stop), min(w, xs.stop)
        if y1 <= y0 or x1 <= x0:
            raise WsssError(f"region {region.describe()} lies outside the maps "
                            f"({self.geometry.region(self.shape).describe()})")
        return y0, x0, y1 - y0, x1 - x0

    def _cropped(self, region: Region) -> LiveTuner:
        y0, x0, hh, ww = self._window(region)
        y1, x1 = y0 + hh, x0 + ww
        key = (y0, x0, y1, x1)
        if self._region_child is None or self._region_child[0] != key:
            ys, xs = slice(y0, y1), slice(x0, x1)
            child = LiveTuner(
                self.cams[:, ys, xs],
                image=None if self.image is None else self.image[ys, xs],
                scores=self.scores,
                background=None if self.background is None else self.background[ys, xs],
                present=self.present, geometry=self.geometry.crop(y0, x0),
                pixel_scale=self.pixel_scale)
            self._region_child = (key, child)
        return self._region_child[1]

    def _cached(self, name: str, key: Any, compute: Callable[[], Any]) -> Any:
        hit = self._cache.get(name)
        if hit is not None and hit[0] == key:
            return hit[1]
        value = compute()
        self._cache[name] = (key, value)
        return value

    def _forced(self, params: PostprocParams, scale: float) -> np.ndarray | None:
        """The :func:`background_code` of the glass and the explicit background mask.

        Kept for the last 4 glass settings, so moving a glass slider back costs nothing.
        """
        method = WhiteMethod(params.white_method)
        key = None if self.image is None or method is WhiteMethod.NONE else \
            (method.value, float(params.white_threshold), _area_px(params.white_min_size, scale))
        if key not in self._forced_cache:
            glass = None
            if key is not None:
                white = self._white_cache.get(method.value)
                if white is None:
                    white = self._white_cache[method.value] = whiteness(self.image, method)
                glass = remove_small(threshold_whiteness(white, method, params.white_threshold),
                                     key[2])
            if len(self._forced_cache) >= 4:
                self._forced_cache.pop(next(iter(self._forced_cache)))
            self._forced_cache[key] = background_code(glass, self.background)
        return self._forced_cache[key]

    def _run_scaled(self, params: PostprocParams, present: Any, region: Any, scale: float,
                    should_stop: Callable[[], bool] | None) -> np.ndarray:
        if region is not None:
            with self._lock:
                child = self._cropped(region)
            return child._run_scaled(params, present, None, scale, should_stop)
        if self.shape[0] * self.shape[1] <= 4:
            # OpenCV takes a 1 x 1 or 4 x 1 image for a scalar: run on a 2x nearest upsample
            # (sizes scaled to match) and keep every other pixel
            with self._lock:
                child = self._upsampled()
            return child._run_scaled(params, present, None, scale / 2, should_stop)[::2, ::2]
        with self._lock:  # scale: model-resolution pixels per pixel of this run
            return self._chain(params, self.present if present is None else present,
                               scale * self.pixel_scale, should_stop or (lambda: False))

    def _chain(self, p: PostprocParams, present: Any, scale: float,
               should_stop: Callable[[], bool]) -> np.ndarray:
        def checkpoint() -> None:
            if should_stop():
                raise Cancelled("post-processing run superseded")

        c = self.cams.shape[0]
        allowed = allowed_classes(c, self.scores, p.score_threshold, present)
        k_allowed = tuple(allowed.tolist())
        k_glass = (p.white_method, p.white_threshold, _area_px(p.white_min_size, scale))
        # glass detection (labellings: one core) runs beside the argmax and background
        glass = in_background(lambda: self._forced(p, scale))
        k_bg = (k_allowed, p.bg_exponent)
        try:
            fg, maxcam = self._cached("fg", k_allowed,
                                      lambda: foreground_argmax(self.cams, allowed))
            bg = self._cached("bg", k_bg, lambda: base_labels(fg, maxcam, p.bg_exponent))
        finally:
            forced = glass.result()  # also on error: nothing left writing the caches
        checkpoint()
        k_base = (k_bg, k_glass)
        lab = bg if forced is None else \
            self._cached("base", k_base, lambda: with_background(bg, forced))
        checkpoint()
        patch = max(2, round(p.area_patch / scale))
        k_area = (k_base, patch, p.min_area_pct)
        lab = self._cached("area", k_area, lambda: min_area_rule(
            lab, self.cams, allowed, maxcam, p.bg_exponent, patch, p.min_area_pct,
            self._grid_origin))
        checkpoint()
        island = _area_px(p.island_max_size, scale) if p.island_rule else 0
        normal_min = _area_px(p.normal_min_size, scale)
        k_isl = (k_area, island, normal_min)
        lab = self._cached("islands", k_isl, lambda: small_normal_to_stroma(
            islands_in_normal(lab, island), normal_min))
        checkpoint()
        min_region = _area_px(p.min_region, scale)
        if min_region > 1:
            regions = self._cached("regions", k_isl, lambda: label_regions(lab, N_LABELS))
            checkpoint()
            lab = self._cached("knn", (k_isl, min_region, p.knn_k),
                               lambda: knn_relabel(lab, regions, min_region, p.knn_k))
        return with_background(lab, forced)


def _area_px(pixels: int, scale: float) -> int:
    """A pixel-count parameter at a ``scale``-times coarser view."""
    return 0 if pixels <= 0 else max(1, round(pixels / (scale * scale)))
