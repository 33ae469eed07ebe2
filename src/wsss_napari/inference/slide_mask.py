"""Whole-slide CAMs -> tissue mask: the one post-processing path of the widgets and the CLI.

The tuning widget, ``wsss-napari slide`` and ``wsss-napari batch`` all build their
:class:`~wsss_napari.postproc.LiveTuner` with :func:`cams_tuner`, so the same maps, model and
parameters give the same mask in napari and on the command line (a test compares them).

Glass detection needs the slide's RGB under the maps; above :data:`MAX_GLASS_PIXELS` map
pixels that RGB would not fit in memory, and the maps are post-processed without it (the
CAM run has already skipped the glass tiles).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..params import PostprocParams
from ..region import MaskGeometry

#: Larger maps are post-processed without glass detection (the RGB would not fit in memory).
MAX_GLASS_PIXELS = 8192 * 8192


def cams_geometry(cams: Any, slide: Any = None) -> MaskGeometry:
    """Where the maps of a :class:`~wsss_napari.inference.slide_cam.SlideCams` lie on the
    slide: the one adapter from the CAM store's record to :class:`MaskGeometry` (level-0
    origin, downsample, and the slide's mpp and file when the store does not say)."""
    mpp = getattr(slide, "mpp", None)
    name = str(getattr(slide, "path", None) or getattr(slide, "name", "") or "")
    geo = getattr(cams, "geometry", None)
    if isinstance(geo, MaskGeometry):
        return MaskGeometry(y=geo.y, x=geo.x, downsample=geo.downsample,
                            mpp=geo.mpp if geo.mpp is not None else mpp, slide=geo.slide or name)
    y, x = (float(v) for v in cams.origin)
    return MaskGeometry(y=y, x=x, downsample=float(cams.downsample), mpp=mpp, slide=name)


def region_rgb(slide: Any, geometry: MaskGeometry, shape: tuple[int, int]) -> np.ndarray:
    """The slide's RGB under a map of ``shape`` placed by ``geometry``, read at the nearest
    pyramid level and resized to ``shape``."""
    import cv2

    d = float(geometry.downsample)
    level = slide.level_for_downsample(d)
    ds = float(slide.downsamples[level])
    y, x = int(round(geometry.y / ds)), int(round(geometry.x / ds))
    h, w = (max(1, int(round(n * d / ds))) for n in shape)
    rgb = np.asarray(slide.read_region(level, y, x, h, w))[..., :3]
    if rgb.shape[:2] != tuple(shape):
        rgb = cv2.resize(rgb, (int(shape[1]), int(shape[0])), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(rgb)


def cams_tuner(cams: Any, slide: Any = None):
    """A LiveTuner over ``cams`` (a ``SlideCams``) placed by its geometry; glass detection
    runs on ``slide``'s pixels when given and the maps have at most
    :data:`MAX_GLASS_PIXELS`."""
    from ..postproc import LiveTuner

    geo = cams_geometry(cams, slide)
    shape = tuple(cams.cams.shape[-2:])
    image = None
    if slide is not None and shape[0] * shape[1] <= MAX_GLASS_PIXELS:
        image = region_rgb(slide, geo, shape)
    origin = (int(round(geo.y / geo.downsample)), int(round(geo.x / geo.downsample)))
    return LiveTuner(np.asarray(cams.cams), image=image, scores=cams.scores, origin=origin,
                     pixel_scale=cams.out_stride)


def slide_mask(cams: Any, params: PostprocParams | None = None, slide: Any = None,
               present: Any = None) -> tuple[np.ndarray, MaskGeometry]:
    """The tissue map of ``cams`` and where it lies (what the tuning widget shows before
    edits, for the same parameters and ``present``).

    Args:
        cams: a ``SlideCams``.
        params: post-processing (default ``PostprocParams()``).
        slide: the slide, for glass detection (``None``: no glass rule).
        present: bool per class allowed, or ``None``.

    Returns:
        ``(mask, geometry)``: uint8 labels with the shape of the maps and their geometry.
    """
    params = params or PostprocParams()
    mask = cams_tuner(cams, slide).run(params, present=present)
    return mask, cams_geometry(cams, slide)
