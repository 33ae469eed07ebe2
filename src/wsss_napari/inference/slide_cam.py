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
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections import deque
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import WsssError
from ..params import CamParams
from ..progress import Progress
from ..region import MaskGeometry, Region

log = logging.getLogger(__name__)

STORE_FORMAT = "wsss-napari-cams/2"
#: Stores of format 1 kept the origin as ``origin: [y, x]`` (read as such).
_LEGACY_FORMATS = ("wsss-napari-cams/1",)
#: done-bitmap values
PENDING, COMPUTED, GLASS = 0, 1, 2


@dataclass
class SlideCams:
    """CAMs of a slide (or region) backed by a zarr store.

    Attributes:
        cams: lazy (dask) float32 ``(C, h, w)`` in ``[0, 1]``: ``raw`` divided per class by
            its maximum over the processed tiles.
        raw: the zarr array of unnormalised CAMs.
        scores: float32 ``(C,)`` image-level scores (maximum over tiles).
        maxima: float32 ``(C,)`` the per-class normalisers.
        geometry: where the maps lie on the slide (:class:`~wsss_napari.region.MaskGeometry`:
            level-0 ``y``/``x`` of the top-left corner of CAM pixel (0, 0), ``downsample``
            = level-0 pixels per CAM pixel, slide ``mpp`` and file).
        region: the level-0 :class:`~wsss_napari.region.Region` that was asked for (clipped
            to the slide).
        path: the zarr store.
        level: pyramid level that was read.
        tile_scores: float32 ``(ty, tx, C)``; ``done``: uint8 ``(ty, tx)`` (1 computed,
            2 glass, 0 not done).
        class_names: class of each channel.
        warnings: things the user should know (e.g. unknown mpp).
        out_stride: model-resolution pixels per CAM pixel (``CamParams.out_stride``): the
            ``pixel_scale`` of the post-processing on these maps.
        postproc: the model's recommended post-processing (a ``PostprocParams`` dict) when
            the maps were computed, or ``None`` if it had none.
        scale_cams: lazy ``(S, C, h, w)`` per-scale maps normalised like ``cams``
            (``CamParams.keep_scales``), else ``None``.
        slide_id: identity of the slide the maps belong to (path, size, name, mpp).
    """

    cams: Any
    raw: Any
    scores: np.ndarray
    maxima: np.ndarray
    geometry: MaskGeometry
    region: Region
    path: Path
    level: int
    tile_scores: np.ndarray
    done: np.ndarray
    class_names: tuple[str, ...] = ()
    warnings: list[str] = field(default_factory=list)
    out_stride: int = 1
    postproc: dict[str, Any] | None = None
    scale_cams: Any = None
    slide_id: dict[str, Any] = field(default_factory=dict)

    @property
    def downsample(self) -> float:
        """Level-0 pixels per CAM pixel (``geometry.downsample``)."""
        return self.geometry.downsample

    @classmethod
    def open(cls, path: str | Path) -> SlideCams:
        """Re-open a finished store (e.g. one written by ``wsss-napari cam``)."""
        import zarr

        p = Path(path)
        try:
            group = zarr.open_group(str(p), mode="r")
        except Exception as err:  # noqa: BLE001 - zarr raises several types here
            raise WsssError(f"'{p}' is not a CAM store ({err})") from err
        if group.attrs.get("format") not in (STORE_FORMAT, *_LEGACY_FORMATS):
            raise WsssError(f"'{p}' is not a wsss-napari CAM store")
        return _result(group, p)


def is_cam_store(path: str | Path) -> bool:
    """Does ``path`` look like a CAM store (a zarr group of one of our formats)?"""
    p = Path(path)
    meta = p / "zarr.json"
    if not meta.is_file():
        return False
    try:
        fmt = json.loads(meta.read_text()).get("attributes", {}).get("format")
    except (OSError, ValueError, AttributeError):
        return False
    return fmt in (STORE_FORMAT, *_LEGACY_FORMATS)


def default_cache_dir() -> Path:
    """Where whole-slide CAM stores are cached (see :mod:`wsss_napari.cache`)."""
    from ..cache import cache_dir

    return cache_dir("cams")


@dataclass(frozen=True)
class _Plan:
    level: int
    ds_level: float       # level-0 px per level px
    resample: float       # level px per model px (1.0 = none)
    model_ds: float       # level-0 px per model px
    y0: int
    x0: int
    h0: int
    w0: int
    tile: int
    halo: int
    out_stride: int
    shape: tuple[int, int]  # model-resolution extent of the region
    grid: tuple[int, int]   # tiles (ny, nx)
    out_shape: tuple[int, int]
    warnings: tuple[str, ...]


def _check_region(region: Any) -> Region | None:
    if region is not None and not isinstance(region, Region):
        raise WsssError(f"region must be a wsss_napari.region.Region (level-0 px), not "
                        f"{region!r}")
    return region


def _plan(slide: Any, model: Any, params: CamParams, region: Region | None) -> _Plan:
    from .multiscale import reach

    H, W = (int(v) for v in slide.shape[:2])
    if region is None:
        y0, x0, h0, w0 = 0, 0, H, W
    else:
        r = region.clip(H, W)
        y0, x0 = int(round(r.y)), int(round(r.x))
        h0, w0 = int(round(r.y1)) - y0, int(round(r.x1)) - x0
        if h0 <= 0 or w0 <= 0:
            raise WsssError(f"region {region.describe()} lies outside the slide "
                            f"({W} x {H} px)")
    warnings = []
    slide_mpp, model_mpp = getattr(slide, "mpp", None), model.config.mpp
    if slide_mpp and model_mpp:
        target = float(model_mpp) / float(slide_mpp)
        level = int(slide.level_for_downsample(target * 1.001))
    else:
        which = "slide" if not slide_mpp else "model"
        warnings.append(f"the {which}'s microns-per-pixel is unknown: CAMs were computed at "
                        "level 0 without resampling; if the slide's magnification differs "
                        "from the training images', set the slide mpp")
        target, level = 1.0, 0
    ds_level = float(slide.downsamples[level])
    resample = target / ds_level
    if abs(resample - 1) < 0.02:
        resample, target = 1.0, ds_level
    os_ = params.out_stride
    # the halo covers the reach of the largest crop, so tiles are seamless (multiscale.py)
    halo = max(int(params.halo), reach(model, params))
    halo = int(math.ceil(halo / os_) * os_)
    mh, mw = max(1, math.ceil(h0 / target)), max(1, math.ceil(w0 / target))
    # tiles no larger than the image (a small image is one small tile)
    T = min(params.tile_size, int(math.ceil(max(mh, mw) / os_) * os_))
    return _Plan(level, ds_level, resample, target, y0, x0, h0, w0, T, halo, os_, (mh, mw),
                 (math.ceil(mh / T), math.ceil(mw / T)),
                 (math.ceil(mh / os_), math.ceil(mw / os_)), tuple(warnings))


def _slide_identity(slide: Any) -> dict[str, Any]:
    path = getattr(slide, "path", None)
    if path:
        p = Path(path)
        try:
            st = p.stat()
        except OSError as err:
            raise WsssError(f"cannot stat slide '{p}': {err.strerror or err}") from err
        return {"path": str(p.resolve()), "size": st.st_size, "mtime": st.st_mtime_ns}
    # in-memory slide: identify it by its content at the thumbnail level
    thumb = np.ascontiguousarray(slide.thumbnail(256))
    return {"name": str(getattr(slide, "name", "array")), "shape": list(slide.shape[:2]),
            "thumb": hashlib.sha256(thumb.tobytes()).hexdigest()}


def _model_hash(model: Any) -> str:
    h = getattr(model, "file_hash", None)
    if h:
        return str(h)
    digest = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    for name, t in model.state_dict().items():
        digest.update(name.encode())
        digest.update(t.detach().float().cpu().numpy().tobytes())
    return "mem-" + digest.hexdigest()


def cache_key(slide: Any, model: Any, params: CamParams, region: Region | None) -> str:
    """Hash of everything that determines the CAMs: slide file, model, parameters, region."""
    p = params.to_dict()
    for k in ("device", "batch_size", "threads", "halo"):  # change speed, not results
        p.pop(k, None)
    blob = {"format": STORE_FORMAT, "slide": _slide_identity(slide), "model": _model_hash(model),
            "params": p, "region": region.to_dict() if region is not None else None}
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()


def _open_store(path: Path, key: str, plan: _Plan, model: Any, params: CamParams,
                explicit: bool, slide: Any) -> Any:
    import zarr

    n_cls = model.config.num_classes
    if path.exists():
        try:
            group = zarr.open_group(str(path), mode="a")
            same = group.attrs.get("key") == key and group.attrs.get("format") == STORE_FORMAT
        except Exception:  # noqa: BLE001 - an unreadable leftover is not ours
            same, group = False, None
        if same:
            return group
        if explicit and group is not None and group.attrs.get("format") != STORE_FORMAT:
            raise WsssError(f"'{path}' exists and is not a wsss-napari CAM store; "
                            "choose another output path")
        if explicit:
            raise WsssError(f"'{path}' holds CAMs of another slide, model, region or "
                            "parameters; delete it or choose another output path")
    from ..io.atomic import check_writable_dir

    check_writable_dir(path.parent)
    group = zarr.open_group(str(path), mode="w")
    cs = plan.tile // plan.out_stride
    group.create_array("cams", shape=(n_cls, *plan.out_shape), dtype="float32",
                       chunks=(1, min(cs, plan.out_shape[0]), min(cs, plan.out_shape[1])),
                       fill_value=0.0)
    group.create_array("done", shape=plan.grid, dtype="uint8", chunks=plan.grid, fill_value=0)
    if params.keep_scales:
        group.create_array("scale_cams", shape=(len(params.scales), n_cls, *plan.out_shape),
                           dtype="float32", chunks=(1, 1, min(cs, plan.out_shape[0]),
                                                    min(cs, plan.out_shape[1])),
                           fill_value=0.0)
    for name in ("tile_max", "tile_scores"):
        group.create_array(name, shape=(*plan.grid, n_cls), dtype="float32",
                           chunks=(*plan.grid, n_cls), fill_value=0.0)
    group.attrs.update({
        "format": STORE_FORMAT, "key": key, "class_names": list(model.config.class_names),
        "geometry": MaskGeometry(y=plan.y0, x=plan.x0,
                                 downsample=plan.model_ds * plan.out_stride,
                                 mpp=slide_mpp(slide), slide=slide_name(slide)).to_dict(),
        "region": Region(y=plan.y0, x=plan.x0, height=plan.h0, width=plan.w0).to_dict(),
        "level": plan.level, "params": params.to_dict(), "model_hash": _model_hash(model),
        "postproc": _recommended(model), "warnings": list(plan.warnings), "complete": False,
    })
    return group


def slide_mpp(slide: Any) -> float | None:
    mpp = getattr(slide, "mpp", None)
    return float(mpp) if mpp else None


def slide_name(slide: Any) -> str:
    """What a geometry records as its slide: the resolved file path, or the array's name."""
    path = getattr(slide, "path", None)
    return str(Path(path).resolve()) if path else str(getattr(slide, "name", "") or "")


def _recommended(model: Any) -> dict[str, Any] | None:
    from ..models.checkpoint import POSTPROC_KEY, recommended_postproc

    if POSTPROC_KEY not in (getattr(model.config, "extra", None) or {}):
        return None
    return recommended_postproc(model).to_dict()


def _result(group: Any, path: Path) -> SlideCams:
    import dask.array as da

    raw = group["cams"]
    done = np.asarray(group["done"][...])
    computed = done == COMPUTED
    tile_max = np.asarray(group["tile_max"][...])
    tile_scores = np.asarray(group["tile_scores"][...])
    n_cls = raw.shape[0]
    if computed.any():
        maxima = tile_max[computed].max(axis=0).astype(np.float32)
        scores = tile_scores[computed].max(axis=0).astype(np.float32)
    else:
        maxima = np.zeros(n_cls, np.float32)
        scores = np.zeros(n_cls, np.float32)
    denom = np.where(maxima > 1e-5, maxima, np.inf).astype(np.float32).reshape(-1, 1, 1)
    cams = da.clip(da.from_zarr(raw) / denom, 0.0, 1.0).astype(np.float32)
    scale_cams = (da.clip(da.from_zarr(group["scale_cams"]) / denom[None], 0.0, 1.0)
                  .astype(np.float32) if "scale_cams" in group else None)
    attrs = dict(group.attrs)
    if "geometry" in attrs:
        geometry = MaskGeometry.from_dict(attrs["geometry"])
        region = Region.from_dict(attrs["region"])
    else:  # format 1: origin [y, x] and region [y, x, h, w], level-0 px
        try:
            (y, x), ds = attrs["origin"], float(attrs["downsample"])
            ry, rx, rh, rw = attrs.get("region") or (y, x, raw.shape[1] * ds, raw.shape[2] * ds)
            geometry = MaskGeometry(y=float(y), x=float(x), downsample=ds)
            region = Region(y=ry, x=rx, height=rh, width=rw)
        except (KeyError, TypeError, ValueError) as err:
            raise WsssError(f"'{path}': CAM store without a readable geometry") from err
    return SlideCams(
        cams=cams, raw=raw, scores=scores, maxima=maxima, geometry=geometry, region=region,
        path=path, level=int(attrs["level"]), tile_scores=tile_scores, done=done,
        class_names=tuple(attrs.get("class_names", ())), warnings=list(attrs.get("warnings", [])),
        out_stride=int(attrs.get("params", {}).get("out_stride", 1)),
        postproc=attrs.get("postproc"),
        scale_cams=scale_cams, slide_id=dict(attrs.get("slide", {})),
    )


def _read_window(slide: Any, plan: _Plan, box: tuple[int, int, int, int]) -> np.ndarray:
    """uint8 pixels of ``box`` = (y, x, h, w) in model px of the region (inside it)."""
    import cv2

    my, mx, h, w = box
    r = plan.resample
    ly = int(round(plan.y0 / plan.ds_level + my * r))
    lx = int(round(plan.x0 / plan.ds_level + mx * r))
    lh, lw = max(1, int(round(h * r))), max(1, int(round(w * r)))
    img = np.asarray(slide.read_region(plan.level, ly, lx, lh, lw))
    if img.shape[:2] != (lh, lw) or img.dtype != np.uint8:
        raise WsssError(f"slide returned a {img.dtype} {img.shape} region for a "
                        f"{lh} x {lw} request")
    img = np.ascontiguousarray(img[..., :3])
    if (lh, lw) != (h, w):
        interp = cv2.INTER_AREA if lh > h else cv2.INTER_LINEAR
        img = cv2.resize(img, (w, h), interpolation=interp)
    return img


def _tile_boxes(plan: _Plan, ty: int, tx: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(core, window) boxes (y, x, h, w) of a tile in model px of the region: the core it
    writes, and the core grown by the halo (clipped to the region) that its crops read."""
    mh, mw = plan.shape
    cy, cx = ty * plan.tile, tx * plan.tile
    core = (cy, cx, min(plan.tile, mh - cy), min(plan.tile, mw - cx))
    wy, wx = max(0, cy - plan.halo), max(0, cx - plan.halo)
    wy1 = min(mh, cy + core[2] + plan.halo)
    wx1 = min(mw, cx + core[3] + plan.halo)
    return core, (wy, wx, wy1 - wy, wx1 - wx)


def _crop_keep(slide: Any, plan: _Plan, grids: list, params: CamParams) -> list | None:
    """Per scale, bool ``(ny, nx)``: crops whose footprint holds at least ``min_tissue``
    tissue in the thumbnail's tissue mask (:mod:`.tissue`); None when nothing is skipped."""
    from .tissue import tissue_mask

    if not params.skip_glass:
        return None
    mask = tissue_mask(np.asarray(slide.thumbnail(1024)))
    integral = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), np.int64)
    integral[1:, 1:] = mask.cumsum(0).cumsum(1)
    fy = mask.shape[0] / slide.shape[0]
    fx = mask.shape[1] / slide.shape[1]
    mh, mw = plan.shape
    thr = max(params.min_tissue, 1e-9)

    def edges(n: int, sg: Any, extent: int, origin: int, f: float, size: int):
        start = np.arange(n) * sg.pitch
        stop = np.minimum(start + sg.foot, extent)
        a = np.floor((origin + start * plan.model_ds) * f).astype(int).clip(0, size - 1)
        b = np.ceil((origin + stop * plan.model_ds) * f).astype(int)
        return a, np.maximum(b, a + 1).clip(max=size)

    keep = []
    for sg in grids:
        ya, yb = edges(sg.ny, sg, mh, plan.y0, fy, mask.shape[0])
        xa, xb = edges(sg.nx, sg, mw, plan.x0, fx, mask.shape[1])
        tissue = (integral[yb][:, xb] - integral[ya][:, xb] - integral[yb][:, xa]
                  + integral[ya][:, xa])
        area = (yb - ya)[:, None] * (xb - xa)[None, :]
        keep.append(tissue / area >= thr)
    return keep


def _glass_tiles(plan: _Plan, grids: list, keep: list | None) -> np.ndarray:
    """bool (ny, nx): True where no kept crop touches a tile (nothing to compute there)."""
    ny, nx = plan.grid
    glass = np.zeros((ny, nx), bool)
    if keep is None:
        return glass
    for ty in range(ny):
        for tx in range(nx):
            (cy, cx, ch, cw), _ = _tile_boxes(plan, ty, tx)
            glass[ty, tx] = not any(  # pad: more than the maps' bilinear samples reach
                kp[slice(*sg.crop_range(cy, cy + ch, sg.ny, sg.foot)),
                   slice(*sg.crop_range(cx, cx + cw, sg.nx, sg.foot))].any()
                for sg, kp in zip(grids, keep, strict=True))
    return glass


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
    from concurrent.futures import ThreadPoolExecutor

    import torch

    from ..device import choose_device
    from .multiscale import crop_geometry, evict_crops, iter_window_cams, scale_grids

    params = params or CamParams()
    if getattr(model.config, "kind", "cam") != "cam":
        raise WsssError("slide CAMs need a CAM model (kind 'cam'), not a segmentation model")
    device = choose_device(params.device)
    region = _check_region(region)
    plan = _plan(slide, model, params, region)
    for w in plan.warnings if _log_warnings else ():
        log.warning(w)
    key = cache_key(slide, model, params, region)
    if out is not None:
        path, explicit = Path(out).expanduser(), True
    else:
        path, explicit = Path(cache_dir or default_cache_dir()) / f"{key[:32]}.zarr", False
    group = _open_store(path, key, plan, model, params, explicit, slide)
    if "slide" not in group.attrs:
        group.attrs["slide"] = {**_slide_identity(slide), "mpp": slide_mpp(slide),
                                "name": str(getattr(slide, "name", "") or "")}
    done = np.asarray(group["done"][...])
    grids = scale_grids(*crop_geometry(model, params), params.scales, plan.shape)
    keep = _crop_keep(slide, plan, grids, params) if (done == PENDING).any() else None
    if (done == PENDING).any():
        glass = _glass_tiles(plan, grids, keep) & (done == PENDING)
        if glass.any():
            done[glass] = GLASS
            group["done"][...] = done
    todo = [(int(ty), int(tx)) for ty, tx in zip(*np.nonzero(done == PENDING), strict=True)]
    n_total = int(done.size)
    n_done = int(n_total - len(todo))
    info = {"computed": 0, "glass": int((done == GLASS).sum()), "level": plan.level}
    yield Progress("CAM tiles", n_done, n_total, dict(info))

    cams_arr, done_arr = group["cams"], group["done"]
    tmax_arr, tsc_arr = group["tile_max"], group["tile_scores"]
    os_, T = plan.out_stride, plan.tile
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="wsss-read")
    pending: deque = deque()
    crop_cache: dict = {}  # crops shared with the next tiles run once (multiscale.py)
    t_start = time.perf_counter()
    try:
        it = iter(todo)

        def submit_next() -> None:
            nxt = next(it, None)
            if nxt is not None:
                window = _tile_boxes(plan, *nxt)[1]
                pending.append((nxt, pool.submit(_read_window, slide, plan, window)))

        for _ in range(3):
            submit_next()
        computed = 0
        while pending:
            (ty, tx), fut = pending.popleft()
            tile = fut.result()
            submit_next()
            core_box, window_box = _tile_boxes(plan, ty, tx)
            evict_crops(crop_cache, grids, core_box[0])
            per_scale: list | None = [] if params.keep_scales else None
            gen = iter_window_cams(model, tile, params, region_shape=plan.shape,
                                   window_box=window_box, core_box=core_box, out_stride=os_,
                                   keep=keep, device=device, grids=grids,
                                   crop_cache=crop_cache, per_scale=per_scale)
            while True:
                try:
                    p = next(gen)
                except StopIteration as stop:
                    raw, scores, _n = stop.value
                    break
                yield Progress("CAM tiles", n_done, n_total,
                               {**info, "crops": f"{p.done}/{p.total}"})
            oy, ox = ty * T // os_, tx * T // os_
            th = min(T // os_, plan.out_shape[0] - oy)
            tw = min(T // os_, plan.out_shape[1] - ox)
            core = raw[:, :th, :tw]
            cams_arr[:, oy:oy + th, ox:ox + tw] = core
            if per_scale is not None:
                group["scale_cams"][:, :, oy:oy + th, ox:ox + tw] = np.stack(
                    [m[:, :th, :tw] for m in per_scale])
            tmax_arr[ty, tx] = core.reshape(core.shape[0], -1).max(axis=1)
            tsc_arr[ty, tx] = scores
            done_arr[ty, tx] = COMPUTED  # last: a tile counts only once fully written
            computed += 1
            n_done += 1
            rate = computed / max(time.perf_counter() - t_start, 1e-6)
            info.update({"computed": computed, "tiles/s": round(rate, 3)})
            yield Progress("CAM tiles", n_done, n_total, dict(info))
        group.attrs["complete"] = True
    finally:
        for _, fut in pending:
            fut.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return _result(group, path)


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


def _is_complete(path: Path) -> bool:
    if not path.exists():
        return False
    try:
        import zarr

        return bool(zarr.open_group(str(path), mode="r").attrs.get("complete"))
    except Exception:  # noqa: BLE001 - unreadable: not complete
        return False
