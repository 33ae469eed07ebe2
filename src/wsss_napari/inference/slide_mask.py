"""Tissue map of a CAM store: post-processing placed on the slide (CLI export, widgets).

:func:`cams_tuner` builds the :class:`~wsss_napari.postproc.LiveTuner` of a
:class:`~wsss_napari.inference.slide_cam.SlideCams` with its geometry and, when the slide is
at hand and the maps small enough, the slide's pixels under the maps (glass detection);
:func:`slide_mask` runs it once with the model's recommended parameters (stored with the
CAMs) or given ones and returns the mask with its :class:`~wsss_napari.region.MaskGeometry`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .. import WsssError
from ..params import PostprocParams
from ..region import MaskGeometry

#: Larger maps are post-processed without glass detection (the RGB would not fit in memory).
MAX_GLASS_PIXELS = 8192 * 8192


def region_rgb(slide: Any, geometry: MaskGeometry, shape: tuple[int, int],
               level: int | None = None) -> np.ndarray:
    """The slide's RGB under a map of ``shape`` placed by ``geometry`` (white outside the
    slide), read at ``level`` (default: the nearest pyramid level that is not coarser) and
    resized to ``shape``: area-averaged when shrinking, bilinear when enlarging. The one
    reader of slide pixels under a map, for the tiles of a map as for the whole of it."""
    import cv2

    d = float(geometry.downsample)
    level = slide.level_for_downsample(d) if level is None else int(level)
    ds = float(slide.downsamples[level])
    y, x = int(round(geometry.y / ds)), int(round(geometry.x / ds))
    h, w = (max(1, int(round(n * d / ds))) for n in shape)
    rgb = np.asarray(slide.read_region(level, y, x, h, w))[..., :3]
    if rgb.shape[:2] != tuple(shape):
        interp = cv2.INTER_AREA if h > shape[0] else cv2.INTER_LINEAR
        rgb = cv2.resize(np.ascontiguousarray(rgb), (int(shape[1]), int(shape[0])),
                         interpolation=interp)
    return np.ascontiguousarray(rgb, dtype=np.uint8)


def cams_tuner(cams: Any, slide: Any = None):
    """A LiveTuner over ``cams`` (a ``SlideCams``) placed by its geometry; glass detection
    runs on ``slide``'s pixels when given and the maps have at most
    :data:`MAX_GLASS_PIXELS`."""
    from ..postproc import LiveTuner

    shape = tuple(cams.cams.shape[-2:])
    image = None
    if slide is not None and shape[0] * shape[1] <= MAX_GLASS_PIXELS:
        image = region_rgb(slide, cams.geometry, shape)
    return LiveTuner(np.asarray(cams.cams), image=image, scores=cams.scores,
                     geometry=cams.geometry, pixel_scale=cams.out_stride)


def stored_params(cams: Any) -> PostprocParams | None:
    """The model's recommended post-processing recorded with the CAMs (``None`` if none)."""
    if not cams.postproc:
        return None
    try:
        return PostprocParams.from_dict(cams.postproc)
    except (TypeError, ValueError) as err:
        raise WsssError(f"'{cams.path}': unreadable recommended post-processing: {err}") from err


def open_slide_of(cams: Any) -> tuple[Any, str | None]:
    """The slide the CAMs were computed on, opened from the path their geometry records;
    ``(None, why)`` when it cannot be (moved, or an in-memory slide)."""
    from ..io.slide import Slide

    name = cams.geometry.slide
    if not name or not Path(name).is_file():
        return None, (f"the slide '{name}' is not at hand" if name else
                      "the CAMs do not say which slide file they belong to")
    try:
        return Slide.open(name), None
    except WsssError as err:
        return None, str(err)


def slide_mask(cams: Any, params: PostprocParams | None = None, slide: Any = None,
               present: Any = None) -> tuple[np.ndarray, MaskGeometry]:
    """The tissue map of ``cams`` and where it lies.

    Args:
        cams: a ``SlideCams`` (e.g. ``SlideCams.open('CAMS.zarr')``).
        params: post-processing; default the recommendation stored with the CAMs, or
            ``PostprocParams()``.
        slide: the slide, for glass detection (``None``: no glass rule).
        present: bool per class allowed, or ``None``.

    Returns:
        ``(mask, geometry)``: uint8 labels with the shape of the maps and their geometry.
    """
    params = params or stored_params(cams) or PostprocParams()
    mask = cams_tuner(cams, slide).run(params, present=present)
    return mask, cams.geometry
