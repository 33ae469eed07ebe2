"""Whole-slide CAMs: tiled multi-scale inference into an on-disk, resumable zarr cache.

Plan of a run:

1. **Level.** The pyramid level nearest the model's resolution but not coarser than it
   (``slide.level_for_downsample(model.mpp / slide.mpp)``); the small remaining factor is
   resampled per tile. If either mpp is unknown, level 0 is used as-is and the result's
   ``warnings`` say so.
2. **Tiles.** ``tile_size`` px at the model's resolution (no larger than the region), read
   with a halo of context that covers the reach of every crop at every scale
   (:func:`.multiscale.reach`: a 224 px crop at scale 0.5 reads 448 px), clipped to the
   region (aligned reads, prefetched by a small thread pool while the model runs). Every
   tile computes the crops of the region's one crop grid that touch it
   (:func:`.multiscale.iter_window_cams`), so tiled maps equal one-piece maps.
3. **Glass.** Crops whose footprint has less tissue than ``min_tissue`` in the thumbnail's
   tissue mask (:mod:`.tissue`) are skipped; a tile that no remaining crop touches is
   marked glass and not computed.
4. **Output.** Each tile's multi-scale CAMs (:mod:`.multiscale`), without the halo, are
   written at ``1/out_stride`` of the model's resolution into ``<store>/cams`` (float32,
   unnormalised) as soon as the tile finishes, then the tile is marked in ``<store>/done``.
   An interrupted run resumes from the bitmap; a repeated request with the same slide
   file, model file, parameters and region finds the finished store and computes nothing.

Normalisation across tiles: the method divides each class CAM by its maximum over the image.
A slide is one image, so the store keeps each tile's per-class maximum and
:attr:`SlideCams.cams` is the lazy quotient ``raw / max over all tiles`` (values in [0, 1]);
a region run is normalised over its region, like a single image.

Image-level scores: each tile's scores are the maximum over its scale-1 crops of
``sigmoid(logits)`` (as for a single image); ``SlideCams.scores`` is the maximum over tiles
(``tile_scores`` keeps them all, for local decisions on large regions).

Modules: the plan (steps 1-3) is :mod:`.tile_plan`, the store and its cache key
:mod:`.cam_store`; this module runs them (its names re-export the store's public ones).
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import WsssError
from ..params import CamParams
from ..progress import Progress
from ..region import Region
from .cam_store import (
    COMPUTED,
    GLASS,
    PENDING,
    STORE_FORMAT,
    SlideCams,
    _is_complete,
    _open_store,
    _result,
    _slide_identity,
    cache_key,
    default_cache_dir,
    is_cam_store,
    slide_mpp,
    slide_name,
)
from .tile_plan import _check_region, _crop_keep, _glass_tiles, _plan, _read_window, _tile_boxes

__all__ = [  # the store's and the plan's public names stay importable from here
    "COMPUTED", "GLASS", "PENDING", "STORE_FORMAT", "Preview", "SlideCams", "cache_key",
    "default_cache_dir", "is_cam_store", "progressive_slide_cams", "slide_cams", "slide_mpp",
    "slide_name",
]

log = logging.getLogger(__name__)


def _store_path(slide: Any, model: Any, params: CamParams, region: Region | None,
                cache_dir: str | Path | None, out: str | Path | None
                ) -> tuple[str, Path, bool]:
    """``(cache key, store path, explicit)``: ``out``, or the cache entry named by the key."""
    key = cache_key(slide, model, params, region)
    if out is not None:
        return key, Path(out).expanduser(), True
    return key, Path(cache_dir or default_cache_dir()) / f"{key[:32]}.zarr", False


def _store_for(slide: Any, model: Any, params: CamParams, plan: Any, key: str, path: Path,
               explicit: bool) -> Any:
    """The store of this request at ``path`` (opened, resumed or created, with the slide's
    identity recorded)."""
    group = _open_store(path, key, plan, model, params, explicit, slide)
    if "slide" not in group.attrs:
        group.attrs["slide"] = {**_slide_identity(slide), "mpp": slide_mpp(slide),
                                "name": str(getattr(slide, "name", "") or "")}
    return group


def _work_ahead(slide: Any, model: Any, params: CamParams, plan: Any, grids: list,
                device: Any) -> Any:
    """A future of the crops' keep masks (thumbnail and tissue mask), computed on a side
    thread with the model's inference copy (:func:`~wsss_napari.models.fuse.inference_model`)
    while this one opens the new store (zarr's first import and the store's creation; issue
    14)."""
    from concurrent.futures import ThreadPoolExecutor

    from ..models.fuse import inference_model
    from .multiscale import prepare_model

    def run() -> list | None:
        keep = _crop_keep(slide, plan, grids, params)
        prepare_model(model, device)
        inference_model(model)
        return keep

    pool = ThreadPoolExecutor(1, thread_name_prefix="wsss-ahead")
    try:
        return pool.submit(run)
    finally:
        pool.shutdown(wait=False)


def _mark_glass(group: Any, slide: Any, plan: Any, grids: list, params: CamParams,
                ahead: Any = None) -> tuple[np.ndarray, list | None]:
    """The done bitmap with pending tiles that no kept crop touches marked glass (and
    stored), and the per-scale crop keep masks (``None`` when nothing is pending; from the
    future ``ahead`` when one computes them)."""
    done = np.asarray(group["done"][...])
    if ahead is not None:
        keep = ahead.result()  # also waits for the model's inference copy
    else:
        keep = _crop_keep(slide, plan, grids, params) if (done == PENDING).any() else None
    if (done == PENDING).any():
        glass = _glass_tiles(plan, grids, keep) & (done == PENDING)
        if glass.any():
            done[glass] = GLASS
            group["done"][...] = done
    return done, keep


def _read_ahead(slide: Any, plan: Any, todo: list[tuple[int, int]], depth: int = 3
                ) -> Generator[tuple[tuple[int, int], np.ndarray], None, None]:
    """``((ty, tx), window pixels)`` of the tiles ``todo``, read by two threads ``depth``
    tiles ahead of the consumer; closing the generator cancels the reads."""
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="wsss-read")
    pending: deque = deque()
    it = iter(todo)

    def submit_next() -> None:
        nxt = next(it, None)
        if nxt is not None:
            window = _tile_boxes(plan, *nxt)[1]
            pending.append((nxt, pool.submit(_read_window, slide, plan, window)))

    try:
        for _ in range(depth):
            submit_next()
        while pending:
            tile_index, fut = pending.popleft()
            tile = fut.result()
            submit_next()
            yield tile_index, tile
    finally:
        for _, fut in pending:
            fut.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def _relabel(gen: Generator[Any, None, Any], make: Any) -> Generator[Any, None, Any]:
    """Yield ``make(p)`` for each ``p`` of ``gen``; return its value."""
    while True:
        try:
            p = next(gen)
        except StopIteration as stop:
            return stop.value
        yield make(p)


def _write_tile(arrays: dict[str, Any], plan: Any, ty: int, tx: int, raw: np.ndarray,
                scores: np.ndarray, per_scale: list | None) -> None:
    """Store tile ``(ty, tx)``'s maps (without the halo), maximum and scores in the store's
    ``arrays`` (by name); mark it done last, so a tile counts only once fully written."""
    os_, T = plan.out_stride, plan.tile
    oy, ox = ty * T // os_, tx * T // os_
    th = min(T // os_, plan.out_shape[0] - oy)
    tw = min(T // os_, plan.out_shape[1] - ox)
    core = raw[:, :th, :tw]
    arrays["cams"][:, oy:oy + th, ox:ox + tw] = core
    if per_scale is not None:
        arrays["scale_cams"][:, :, oy:oy + th, ox:ox + tw] = np.stack(
            [m[:, :th, :tw] for m in per_scale])
    arrays["tile_max"][ty, tx] = core.reshape(core.shape[0], -1).max(axis=1)
    arrays["tile_scores"][ty, tx] = scores
    arrays["done"][ty, tx] = COMPUTED


def slide_cams(slide: Any, model: Any, params: CamParams | None = None,
               cache_dir: str | Path | None = None, region: Region | None = None,
               out: str | Path | None = None, *, _log_warnings: bool = True
               ) -> Generator[Progress, None, SlideCams]:
    """Compute (or resume, or reuse) the CAMs of a slide or a level-0 region of it.

    Args:
        slide: an ``io.slide.Slide``.
        model: a CAM model (``models.checkpoint.load_model``).
        params: :class:`CamParams` (scales, tiles, halo, glass skipping, device ...).
        cache_dir: where stores are kept, named by the cache key
            (default :func:`default_cache_dir`).
        region: a level-0 :class:`~wsss_napari.region.Region`; default the whole slide.
        out: an explicit store path instead (refused if it holds another request's CAMs).

    Yields:
        ``Progress('CAM tiles', done, total, info)`` at least once per batch of crops.

    Returns:
        :class:`SlideCams`. Closing the generator early stops the run; finished tiles stay
        in the store and the next identical request resumes from them.
    """
    import torch

    params = params or CamParams()
    device, plan, path, group, grids, done, keep = _prepare(
        slide, model, params, region, cache_dir, out, _log_warnings)
    todo = [(int(ty), int(tx)) for ty, tx in zip(*np.nonzero(done == PENDING), strict=True)]
    n_total = int(done.size)
    n_done = int(n_total - len(todo))
    info = {"computed": 0, "glass": int((done == GLASS).sum()), "level": plan.level}
    yield Progress("CAM tiles", n_done, n_total, dict(info))

    arrays = {name: group[name] for name in ("cams", "done", "tile_max", "tile_scores",
                                             *(("scale_cams",) if params.keep_scales else ()))}
    crop_cache: dict = {}  # crops shared with the next tiles run once (multiscale.py)
    t_start = time.perf_counter()
    reads = _read_ahead(slide, plan, todo)
    try:
        computed = 0
        for (ty, tx), tile in reads:
            raw, scores, per_scale = yield from _tile_cams(
                model, tile, params, plan, (ty, tx), grids, keep, device, crop_cache,
                lambda p, n=n_done: Progress("CAM tiles", n, n_total,
                                             {**info, "crops": f"{p.done}/{p.total}"}))
            _write_tile(arrays, plan, ty, tx, raw, scores, per_scale)
            computed += 1
            n_done += 1
            rate = computed / max(time.perf_counter() - t_start, 1e-6)
            info.update({"computed": computed, "tiles/s": round(rate, 3)})
            yield Progress("CAM tiles", n_done, n_total, dict(info))
        group.attrs["complete"] = True
    finally:
        reads.close()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return _result(group, path)


def _prepare(slide: Any, model: Any, params: CamParams, region: Region | None,
             cache_dir: str | Path | None, out: str | Path | None, log_warnings: bool):
    """Everything before the first tile: the device, the tile plan, the store (new, resumed
    or reused), the crop grids, and the tiles' states with glass tiles marked;
    ``(device, plan, path, group, grids, done, keep)``."""
    from ..device import choose_device
    from .multiscale import crop_geometry, scale_grids

    if getattr(model.config, "kind", "cam") != "cam":
        raise WsssError("slide CAMs need a CAM model (kind 'cam'), not a segmentation model")
    device = choose_device(params.device)
    region = _check_region(region)
    plan = _plan(slide, model, params, region)
    for w in plan.warnings if log_warnings else ():
        log.warning(w)
    grids = scale_grids(*crop_geometry(model, params), params.scales, plan.shape)
    key, path, explicit = _store_path(slide, model, params, region, cache_dir, out)
    # a new store: every tile is pending, so prepare the run beside the store's creation
    ahead = _work_ahead(slide, model, params, plan, grids, device) if not path.exists() else None
    group = _store_for(slide, model, params, plan, key, path, explicit)
    done, keep = _mark_glass(group, slide, plan, grids, params, ahead)
    return device, plan, path, group, grids, done, keep


def _tile_cams(model: Any, tile: Any, params: CamParams, plan: Any, index: tuple[int, int],
               grids: Any, keep: Any, device: Any, crop_cache: dict, progress: Any):
    """One tile's maps from its window of the slide (crops shared with the next tiles come
    from ``crop_cache``), relaying crop progress through ``progress``; returns ``(raw maps,
    scores, per-scale maps or None)``."""
    from .multiscale import evict_crops, iter_window_cams

    core_box, window_box = _tile_boxes(plan, *index)
    evict_crops(crop_cache, grids, core_box[0])
    per_scale: list | None = [] if params.keep_scales else None
    gen = iter_window_cams(model, tile, params, region_shape=plan.shape,
                           window_box=window_box, core_box=core_box,
                           out_stride=plan.out_stride, keep=keep, device=device,
                           grids=grids, crop_cache=crop_cache, per_scale=per_scale)
    raw, scores, _n = yield from _relabel(gen, progress)
    return raw, scores, per_scale


@dataclass(frozen=True)
class Preview:
    """A first result of :func:`progressive_slide_cams`, yielded among its ``Progress``
    records: the maps at one scale, shown while the other scales are computed."""

    result: SlideCams
    params: CamParams


def progressive_slide_cams(slide: Any, model: Any, params: CamParams | None = None,
                           cache_dir: str | Path | None = None, region: Any = None
                           ) -> Generator[Progress | Preview, None, SlideCams]:
    """:func:`slide_cams` in two passes: the scale nearest 1 alone first (a :class:`Preview`
    within seconds for a field of view), then all of ``params.scales``. Both results are
    cached stores of their own, so a repeated request shows the final maps at once."""
    params = params or CamParams()
    if len(params.scales) > 1:
        quick = params.replace(scales=(min(params.scales, key=lambda s: abs(math.log(s))),))
        full_key = cache_key(slide, model, params, region)
        full = Path(cache_dir or default_cache_dir()) / f"{full_key[:32]}.zarr"
        if not _is_complete(full):
            first = yield from slide_cams(slide, model, quick, cache_dir=cache_dir,
                                          region=region, _log_warnings=False)
            yield Preview(first, quick)
    return (yield from slide_cams(slide, model, params, cache_dir=cache_dir, region=region))
