"""Segmentation-model tissue map of a slide, on the grid of the CAM maps.

A stage-2 segmentation model (``config.kind == 'seg'``) predicts background and the tissue
classes itself, so its map needs no post-processing. :func:`slide_seg` places it on a given
:class:`~wsss_napari.region.MaskGeometry` and shape (the CAM store's, so the mask lines up
pixel for pixel with the per-class CAM layers); :func:`map_geometry` gives the geometry a CAM
store of the same resolution would have, when there are no CAMs.

Plan: map pixels are ``k x k`` *work* pixels, ``k = round(downsample / model downsample)``
(the model's resolution, snapped so that ``k`` is whole). The region is cut into tiles of
whole map pixels; each is read at the pyramid level nearest the work resolution (not
coarser), with a halo of at least one model window, and run through
:func:`~wsss_napari.inference.predict.seg_probabilities` (Gaussian-blended windows). Tile
origins and halos are multiples of the window stride, so every tile sees the windows of the
one-piece run: a tiled map equals a one-piece map up to float rounding. Probabilities are
averaged over each map pixel's ``k x k`` work pixels, then argmax (the model's last channel,
background, is class 3), after the regional vote of normal versus stroma on the whole map
(``CamParams.context_um``) where it is on. Tiles whose window holds no tissue in the
thumbnail's tissue mask (:mod:`.tissue`) are background without running the model
(``CamParams.skip_glass``). The post-processing's glass rule (``white_method`` /
``white_threshold`` / ``white_min_size`` of ``glass``) is applied to the map when its
pixels fit in memory.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import WsssError
from ..classes import BACKGROUND
from ..models.config import model_kind
from ..params import CamParams, PostprocParams
from ..progress import Progress
from ..region import MaskGeometry, Region

STAGE = "segmentation tiles"


@dataclass(frozen=True)
class _SegPlan:
    work_ds: float  # level-0 px per work px
    k: int          # work px per map px
    level: int      # pyramid level read
    size: int       # model window (work px)
    stride: int     # window stride (work px)
    tile: int       # tile core edge (work px), a multiple of lcm(stride, k)
    halo: int       # work px around a tile core, a multiple of stride, >= one window
    shape: tuple[int, int]  # map shape


def check_seg_model(model: Any, what: str = "the segmentation model") -> Any:
    """``model`` if it is a segmentation model, else one clear error."""
    kind = model_kind(model)
    if kind != "seg":
        src = getattr(model, "source", "") or ""
        raise WsssError(f"{what} {f'{src!r} ' if src else ''}is a {kind or 'non'}-kind model "
                        "(a CAM classifier?); a segmentation mask needs a stage-2 model made "
                        "by 'wsss-napari train-seg'")
    return model


def map_geometry(slide: Any, model: Any, params: CamParams | None = None,
                 region: Region | None = None) -> tuple[MaskGeometry, tuple[int, int]]:
    """``(geometry, shape)`` of the map a CAM store of ``model``'s resolution would have for
    ``slide`` (or a level-0 ``region`` of it): origin, downsample ``model px * out_stride``."""
    from .cam_store import slide_mpp, slide_name
    from .tile_plan import _check_region, _plan

    plan = _plan(slide, model, params or CamParams(), _check_region(region))
    geo = MaskGeometry(y=plan.y0, x=plan.x0, downsample=plan.model_ds * plan.out_stride,
                       mpp=slide_mpp(slide), slide=slide_name(slide))
    return geo, tuple(int(n) for n in plan.out_shape)


def _seg_plan(slide: Any, model: Any, geometry: MaskGeometry, shape: tuple[int, int],
              params: CamParams) -> _SegPlan:
    from .predict import _round_up

    slide_mpp, model_mpp = getattr(slide, "mpp", None), model.config.mpp
    model_ds = float(model_mpp) / float(slide_mpp) if slide_mpp and model_mpp else 1.0
    k = max(1, int(round(float(geometry.downsample) / model_ds)))
    work_ds = float(geometry.downsample) / k
    size = _round_up(int(params.crop_size or model.config.input_size))
    stride = max(1, min(int(params.stride or size // 2), size))
    unit = stride * k // math.gcd(stride, k)
    tile = max(unit, int(math.ceil(params.tile_size / unit)) * unit)
    halo = int(math.ceil(size / stride)) * stride
    level = int(slide.level_for_downsample(work_ds * 1.001))
    return _SegPlan(work_ds, k, level, size, stride, tile, halo,
                    (int(shape[0]), int(shape[1])))


def _read_work(slide: Any, plan: _SegPlan, geometry: MaskGeometry,
               box: tuple[int, int, int, int]) -> np.ndarray:
    """uint8 RGB of ``box`` = (y, x, h, w) in work px of the map (white outside the slide)."""
    from .slide_mask import region_rgb

    wy, wx, h, w = box
    at = MaskGeometry(y=geometry.y + wy * plan.work_ds, x=geometry.x + wx * plan.work_ds,
                      downsample=plan.work_ds)
    return region_rgb(slide, at, (h, w), level=plan.level)


def _tiles(plan: _SegPlan) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """(core, window) boxes (y, x, h, w) in work px of every tile, row by row."""
    H, W = plan.shape[0] * plan.k, plan.shape[1] * plan.k
    out = []
    for cy in range(0, H, plan.tile):
        for cx in range(0, W, plan.tile):
            ch, cw = min(plan.tile, H - cy), min(plan.tile, W - cx)
            wy, wx = max(0, cy - plan.halo), max(0, cx - plan.halo)
            wy1, wx1 = min(H, cy + ch + plan.halo), min(W, cx + cw + plan.halo)
            out.append(((cy, cx, ch, cw), (wy, wx, wy1 - wy, wx1 - wx)))
    return out


def _tissue_lookup(slide: Any, plan: _SegPlan, geometry: MaskGeometry):
    """A function ``window box -> True when the thumbnail shows tissue there``."""
    from .tissue import tissue_fraction, tissue_mask

    mask = tissue_mask(np.asarray(slide.thumbnail(1024)))
    fy, fx = mask.shape[0] / slide.shape[0], mask.shape[1] / slide.shape[1]

    def has_tissue(box: tuple[int, ...]) -> bool:
        y0 = geometry.y + box[0] * plan.work_ds
        x0 = geometry.x + box[1] * plan.work_ds
        y1, x1 = y0 + box[2] * plan.work_ds, x0 + box[3] * plan.work_ds
        return tissue_fraction(mask, y0 * fy, x0 * fx, y1 * fy, x1 * fx) > 0
    return has_tissue


def _tile_probs(model: Any, rgb: np.ndarray, plan: _SegPlan, core: tuple[int, ...],
                window: tuple[int, ...], params: CamParams, device: Any,
                epi: np.ndarray | None = None) -> np.ndarray:
    """float32 ``(C + 1, h, w)`` on one tile core's map pixels: the blended probabilities of
    its window, averaged over each map pixel, its tissue reweighted by the region's
    epithelium prior ``epi`` on the core's map pixels when given."""
    from .predict import seg_probabilities

    prob = seg_probabilities(model, rgb, params.replace(epithelium=0.0, context_um=0.0),
                             device)
    oy, ox = core[0] - window[0], core[1] - window[1]
    p = prob[:, oy:oy + core[2], ox:ox + core[3]]
    k = plan.k
    p = p.reshape(p.shape[0], core[2] // k, k, core[3] // k, k).mean(axis=(2, 4))
    if epi is not None:  # (epithelium probability, glass fraction) on the core's map pixels
        from ..epithelium import reweight_by_tissue

        epi = epi.astype(np.float32)
        p = reweight_by_tissue(p, epi[0], epi[1], model.config.class_names, params.epithelium,
                               params.air_threshold)
    return p


def _labels(p: np.ndarray, present: tuple[bool, ...] | None) -> np.ndarray:
    """Map labels of probabilities ``(C + 1, h, w)``: argmax, the last channel being
    background; suppressed classes (``present`` False) never win."""
    p = p.astype(np.float32)
    for c, keep in enumerate(present or ()):
        if not keep and c < p.shape[0] - 1:
            p[c] = -1.0
    label = np.argmax(p, axis=0).astype(np.uint8)
    label[label == p.shape[0] - 1] = BACKGROUND
    return label


def _apply_glass(mask: np.ndarray, rgb: np.ndarray, glass: PostprocParams, k: int) -> None:
    """Force background where the map's RGB is glass by the post-processing's rule."""
    from ..params import WhiteMethod
    from ..postproc.glass import glass_mask

    if WhiteMethod(glass.white_method) is WhiteMethod.NONE:
        return
    min_size = 0 if glass.white_min_size <= 0 else max(1, round(glass.white_min_size / k**2))
    g = glass_mask(rgb, glass.white_method, glass.white_threshold, min_size)
    if g is not None:
        mask[g] = BACKGROUND


def slide_seg(slide: Any, model: Any, geometry: MaskGeometry, shape: tuple[int, int],
              params: CamParams | None = None, glass: PostprocParams | None = None,
              present: tuple[bool, ...] | None = None) -> Generator[Progress, None, np.ndarray]:
    """Label map of a segmentation model over ``shape`` map pixels placed by ``geometry``.

    Args:
        slide: an ``io.slide.Slide``.
        model: a segmentation model (``config.kind == 'seg'``).
        geometry, shape: where the map lies and its size (e.g. a ``SlideCams``' geometry
            and ``cams.shape[-2:]``, or :func:`map_geometry`).
        params: ``tile_size`` (tile edge in work px, rounded up to whole windows strides
            and map pixels), ``skip_glass``,
            ``crop_size`` / ``stride`` (windows), ``batch_size``, ``device``, ``flip`` /
            ``tta``, ``threads``, ``epithelium`` (the region's epithelium prior,
            :mod:`.slide_prior`, computed before the tiles), ``context_um`` (the regional
            vote, on the whole map after the tiles: :class:`_LabelSink`).
        glass: post-processing parameters whose glass rule forces background (``None``: none).
        present: per foreground class, False to suppress it (``None``: all allowed).

    Yields:
        ``Progress('segmentation tiles', done, total, info)`` once per tile.

    Returns:
        uint8 ``shape`` map, values 0..3 (3 = background).
    """
    from ..device import choose_device
    from .slide_mask import MAX_GLASS_PIXELS

    check_seg_model(model)
    params = params or CamParams()
    plan = _seg_plan(slide, model, geometry, shape, params)
    epi = yield from _region_prior(slide, model, geometry, plan.shape, params)
    device = choose_device(params.device)
    sink = _LabelSink(model, plan.shape, _vote_sigma(slide, model, geometry, params), present)
    small = plan.shape[0] * plan.shape[1] <= MAX_GLASS_PIXELS
    rgb_map = np.full((*plan.shape, 3), 255, np.uint8) if glass is not None and small else None
    has_tissue = _tissue_lookup(slide, plan, geometry) if params.skip_glass else None
    tiles = _tiles(plan)
    info = {"computed": 0, "glass": 0, "level": plan.level}
    yield Progress(STAGE, 0, len(tiles), dict(info))
    for i, (core, window) in enumerate(tiles):
        k = plan.k
        rows = slice(core[0] // k, (core[0] + core[2]) // k)
        cols = slice(core[1] // k, (core[1] + core[3]) // k)
        if has_tissue is not None and not has_tissue(window):
            info["glass"] += 1
        else:
            rgb = _read_work(slide, plan, geometry, window)
            sink.put(rows, cols, _tile_probs(model, rgb, plan, core, window, params, device,
                                             None if epi is None else epi[:, rows, cols]))
            if rgb_map is not None:
                rgb_map[rows, cols] = _block_mean(rgb, core, window, k)
            info["computed"] += 1
        yield Progress(STAGE, i + 1, len(tiles), dict(info))
    mask = sink.labels()
    if rgb_map is not None:
        _apply_glass(mask, rgb_map, glass, plan.k)
    return mask


def _region_prior(slide: Any, model: Any, geometry: MaskGeometry, shape: tuple[int, int],
                  params: CamParams) -> Generator[Progress, None, np.ndarray | None]:
    """The epithelium prior of the whole region (:mod:`.slide_prior`), once, before the
    tiles, so that they are seamless; ``None`` when it is off."""
    if params.epithelium <= 0:
        return None
    from .slide_prior import region_epithelium

    return (yield from region_epithelium(slide, model, geometry, shape))


def _vote_sigma(slide: Any, model: Any, geometry: MaskGeometry, params: CamParams) -> float:
    """The regional vote's sigma in map pixels (``params.context_um`` is in microns)."""
    um = float(geometry.downsample) * float(getattr(slide, "mpp", None)
                                            or model.config.mpp or 1.0)  # um per map px
    return params.context_um / um


class _LabelSink:
    """Where the tiles' probabilities go: straight to labels, or, with the regional vote
    (``sigma_px`` > 0, :func:`~wsss_napari.airiness.regional_vote`), kept as float16
    ``(C + 1)`` per map pixel until the whole map is in, then voted and labelled."""

    def __init__(self, model: Any, shape: tuple[int, int], sigma_px: float,
                 present: tuple[bool, ...] | None) -> None:
        self.names, self.sigma_px, self.present = model.config.class_names, sigma_px, present
        self.mask = self.probs = None
        if sigma_px > 0:  # not computed yet: background
            self.probs = np.zeros((len(self.names) + 1, *shape), np.float16)
            self.probs[-1] = 1.0
        else:
            self.mask = np.full(shape, BACKGROUND, np.uint8)

    def put(self, rows: slice, cols: slice, p: np.ndarray) -> None:
        if self.probs is None:
            self.mask[rows, cols] = _labels(p, self.present)
        else:
            self.probs[:, rows, cols] = p

    def labels(self) -> np.ndarray:
        if self.probs is None:
            return self.mask
        from ..airiness import regional_vote

        return _labels(regional_vote(self.probs, self.names, self.sigma_px), self.present)


def _block_mean(rgb: np.ndarray, core: tuple[int, ...], window: tuple[int, ...],
                k: int) -> np.ndarray:
    """The core's RGB averaged over map pixels (``k x k`` work px each)."""
    oy, ox = core[0] - window[0], core[1] - window[1]
    c = rgb[oy:oy + core[2], ox:ox + core[3]].astype(np.float32)
    c = c.reshape(core[2] // k, k, core[3] // k, k, 3).mean(axis=(1, 3))
    return np.clip(np.round(c), 0, 255).astype(np.uint8)
