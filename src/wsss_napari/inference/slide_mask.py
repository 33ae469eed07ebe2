"""Whole-slide CAMs -> tissue mask: the one post-processing path of the widgets and the CLI.

The tuning widget, ``wsss-napari slide`` and ``wsss-napari batch`` all build their
:class:`~wsss_napari.postproc.LiveTuner` with :func:`make_tuner`, so the same maps, model and
parameters give the same mask in napari and on the command line (a test compares them).

Glass detection needs the slide's RGB under the maps; above :data:`MAX_GLASS_PIXELS` map
pixels that RGB would not fit in memory, and the maps are post-processed without it (the
CAM run has already skipped the glass tiles).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..params import PostprocParams
from ..region import MaskGeometry

#: Larger maps are post-processed without glass detection (the RGB would not fit in memory).
MAX_GLASS_PIXELS = 8192 * 8192


def cams_geometry(cams: Any, slide: Any = None) -> MaskGeometry:
    """Where the maps of a :class:`~wsss_napari.inference.slide_cam.SlideCams` lie on the slide.

    The one adapter from the CAM store's record to :class:`MaskGeometry` (level-0 origin,
    downsample, the slide's mpp and name).
    """
    geo = getattr(cams, "geometry", None)
    mpp = getattr(slide, "mpp", None)
    name = str(getattr(slide, "path", None) or getattr(slide, "name", "") or "")
    if isinstance(geo, MaskGeometry):
        return MaskGeometry(y=geo.y, x=geo.x, downsample=geo.downsample,
                            mpp=geo.mpp if geo.mpp is not None else mpp, slide=geo.slide or name)
    y, x = (float(v) for v in cams.origin)
    return MaskGeometry(y=y, x=x, downsample=float(cams.downsample), mpp=mpp, slide=name)


def region_rgb(slide: Any, geometry: MaskGeometry, shape: Sequence[int]) -> np.ndarray:
    """The slide's RGB under a map of ``shape`` with ``geometry``, read at the nearest pyramid
    level and resized to ``shape`` (uint8 ``(h, w, 3)``)."""
    import cv2

    d = float(geometry.downsample)
    level = slide.level_for_downsample(d)
    ds = float(slide.downsamples[level])
    y, x = int(round(geometry.y / ds)), int(round(geometry.x / ds))
    h, w = (max(1, int(round(n * d / ds))) for n in shape[-2:])
    rgb = np.asarray(slide.read_region(level, y, x, h, w))
    if rgb.shape[:2] != tuple(shape[-2:]):
        rgb = cv2.resize(rgb, (int(shape[-1]), int(shape[-2])), interpolation=cv2.INTER_AREA)
    return rgb


def glass_rgb(slide: Any, geometry: MaskGeometry, shape: Sequence[int]) -> np.ndarray | None:
    """RGB under the maps for glass detection; None when the slide is unknown or the maps
    exceed :data:`MAX_GLASS_PIXELS`."""
    h, w = (int(n) for n in shape[-2:])
    if slide is None or h * w > MAX_GLASS_PIXELS:
        return None
    return region_rgb(slide, geometry, (h, w))


def make_tuner(cams: Any, slide: Any = None):
    """A :class:`~wsss_napari.postproc.LiveTuner` over the maps of ``cams`` (a ``SlideCams``),
    with the slide's pixels under them for glass detection."""
    from ..postproc import LiveTuner

    geo = cams_geometry(cams, slide)
    shape = tuple(cams.cams.shape[-2:])
    origin = (int(round(geo.y / geo.downsample)), int(round(geo.x / geo.downsample)))
    return LiveTuner(np.asarray(cams.cams), image=glass_rgb(slide, geo, shape),
                     scores=cams.scores, origin=origin, pixel_scale=cams.out_stride)


def slide_mask(cams: Any, slide: Any, params: PostprocParams,
               present: Sequence[bool] | None = None) -> np.ndarray:
    """The full-resolution label mask of the maps (what the tuning widget shows before edits).

    Args:
        cams: a ``SlideCams``.
        slide: the :class:`~wsss_napari.io.slide.Slide` the maps were computed on (or None:
            no glass detection).
        params: post-processing parameters.
        present: per foreground class, False to suppress it (default: all allowed).

    Returns:
        uint8 ``(h, w)`` labels (0 tumor, 1 stroma, 2 normal, 3 background).
    """
    return make_tuner(cams, slide).run(params, present=None if present is None
                                       else tuple(bool(p) for p in present))
