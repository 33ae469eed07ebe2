"""The tiling plan of a whole-slide CAM run: level, resampling, tiles and halo, the reads,
and which crops and tiles are glass (see :mod:`.slide_cam` for the whole run)."""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import WsssError
from ..params import CamParams
from ..region import Region


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


def mpp_warnings(slide: Any, model: Any) -> list[str]:
    """One line when the slide's (or the model's) microns per pixel is unknown: level 0 is
    then read as if it were at the model's resolution."""
    slide_mpp, model_mpp = getattr(slide, "mpp", None), model.config.mpp
    if not slide_mpp:
        at = f"{float(model_mpp):g} um/px" if model_mpp else "the model's resolution"
        return [f"the slide's microns-per-pixel is unknown: level 0 is read as if it were "
                f"{at}; give the real value with --slide-mpp UM (CAM widget: 'Slide µm/px')"]
    if not model_mpp:
        return ["the model's microns-per-pixel is unknown: level 0 is read without "
                "resampling"]
    return []


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
    warnings = mpp_warnings(slide, model)
    slide_mpp, model_mpp = getattr(slide, "mpp", None), model.config.mpp
    if slide_mpp and model_mpp:
        target = float(model_mpp) / float(slide_mpp)
        level = int(slide.level_for_downsample(target * 1.001))
    else:
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


#: Tissue masks of open slides' thumbnails: a field of view's one-scale preview and its
#: final pass, and every later run on the same open slide, share one.
_TISSUE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _slide_tissue(slide: Any) -> np.ndarray:
    """The tissue mask (:mod:`.tissue`) of ``slide.thumbnail(1024)``, kept per slide."""
    from .tissue import tissue_mask

    try:
        mask = _TISSUE.get(slide)
    except TypeError:  # not weakly referenceable: computed each time
        mask = None
    if mask is None:
        mask = tissue_mask(np.asarray(slide.thumbnail(1024)))
        mask.flags.writeable = False
        try:
            _TISSUE[slide] = mask
        except TypeError:
            pass
    return mask


def _crop_keep(slide: Any, plan: _Plan, grids: list, params: CamParams) -> list | None:
    """Per scale, bool ``(ny, nx)``: crops whose footprint holds at least ``min_tissue``
    tissue in the thumbnail's tissue mask (:mod:`.tissue`); None when nothing is skipped."""
    if not params.skip_glass:
        return None
    mask = _slide_tissue(slide)
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
