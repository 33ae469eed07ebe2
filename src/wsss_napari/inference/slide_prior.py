"""The epithelium prior of a slide region, at the resolution of its segmentation map.

Why once per region and not per tile: SHELL's input is normalised by stain vectors and
channel ranges (:mod:`wsss_napari.epithelium`). Estimated tile by tile they would differ
from tile to tile and the map would show the tile grid. As SHELL does for whole slides, one
:class:`~wsss_napari.epithelium.StainReference` is estimated on an overview of the region;
the network then runs in blocks at its own 2 um/px with a margin of context, and each
block's core is resized onto the map's pixels. The result does not depend on how
:func:`~wsss_napari.inference.slide_seg.slide_seg` tiles the map.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from typing import Any

import numpy as np

from ..progress import Progress
from ..region import MaskGeometry

STAGE = "epithelium prior"
#: Block core and context margin, in SHELL px (2 um/px): 2 mm blocks, 192 um of context
#: (SHELL's 128 um, and the reach of the glass fraction's 383 um window).
BLOCK, MARGIN = 1024, 96
#: Longest side of the overview the stain reference is estimated on.
OVERVIEW = 2048


def region_epithelium(slide: Any, model: Any, geometry: MaskGeometry, shape: tuple[int, int]
                      ) -> Generator[Progress, None, np.ndarray | None]:
    """float16 ``(2, *shape)`` on the map's pixels: the epithelium probability (0.5 = no
    opinion, where a block holds no tissue) and the glass fraction around each pixel
    (:mod:`wsss_napari.airiness`); ``None`` when the prior cannot run here or the region
    has no stain to estimate. Yields ``Progress('epithelium prior', done, total)`` per
    block."""
    import cv2

    from ..airiness import glass_fraction
    from ..epithelium import MODEL_MPP, load_epithelium_prior, stain_reference, warn_unavailable
    from .slide_mask import region_rgb

    if warn_unavailable():
        return None
    um0 = float(getattr(slide, "mpp", None) or model.config.mpp or 1.0)  # um per level-0 px
    sds = MODEL_MPP / um0  # level-0 px per SHELL px
    mds = float(geometry.downsample)  # level-0 px per map px
    H, W = int(shape[0]), int(shape[1])
    h0, w0 = H * mds, W * mds
    ods = sds * max(1.0, max(h0, w0) / sds / OVERVIEW)  # level-0 px per overview px
    overview = region_rgb(slide, MaskGeometry(y=geometry.y, x=geometry.x, downsample=ods),
                          (max(8, round(h0 / ods)), max(8, round(w0 / ods))))
    reference = stain_reference(overview)
    if reference is None:
        return None
    net = load_epithelium_prior()
    core = max(1, int(round(BLOCK * sds / mds)))  # map px per block core
    blocks = [(y, x) for y in range(0, H, core) for x in range(0, W, core)]
    out = np.full((2, H, W), 0.5, np.float16)
    yield Progress(STAGE, 0, len(blocks))
    for i, (my, mx) in enumerate(blocks):
        mh, mw = min(core, H - my), min(core, W - mx)
        hs, ws = max(1, math.ceil(mh * mds / sds)), max(1, math.ceil(mw * mds / sds))
        box = MaskGeometry(y=geometry.y + my * mds - MARGIN * sds,
                           x=geometry.x + mx * mds - MARGIN * sds, downsample=sds)
        rgb = region_rgb(slide, box, (hs + 2 * MARGIN, ws + 2 * MARGIN))
        maps = (net.probability(rgb, MODEL_MPP, reference), glass_fraction(rgb, MODEL_MPP))
        for c, m in enumerate(maps):
            if m is not None:
                m = np.ascontiguousarray(m[MARGIN:MARGIN + hs, MARGIN:MARGIN + ws])
                out[c, my:my + mh, mx:mx + mw] = cv2.resize(m, (mw, mh),
                                                            interpolation=cv2.INTER_AREA)
        yield Progress(STAGE, i + 1, len(blocks))
    return out
