"""Tissue mask of a slide thumbnail, so that whole-slide inference skips glass.

Glass is bright and unsaturated; H&E-stained tissue is saturated (pink / purple). The mask is
``saturation > t`` (Otsu's threshold, clipped to :data:`SAT_RANGE` so that pale tissue is
kept and slightly tinted glass rejected) and not almost white, plus anything dark (pen, dense
nuclei); small specks (dust) are removed and the mask is dilated by a pixel so tile borders
at the tissue edge are not dropped.
"""

from __future__ import annotations

import numpy as np

from .. import WsssError

#: Saturation (0-255) thresholds: Otsu's value is clipped into this range. Glass in scanned
#: slides stays below ~6 (90th percentile in the shared SVS thumbnails), pale tissue such as
#: alveolar lung is only ~15, while Otsu alone splits pale from dark tissue (~55-65).
SAT_RANGE = (8, 14)
#: Grey level above which a pixel is glass whatever its saturation.
WHITE_GREY = 245
#: Grey level below which a pixel is tissue (or at least not glass) whatever its saturation.
DARK_GREY = 180


def tissue_mask(rgb: np.ndarray, min_size: int | None = None) -> np.ndarray:
    """Boolean tissue mask of a (thumbnail) RGB image.

    Args:
        rgb: uint8 ``(h, w, 3)``.
        min_size: connected tissue regions smaller than this (px) are dropped; default
            0.02 % of the image area, at least 4 px.

    Returns:
        bool ``(h, w)``: True where there is tissue.
    """
    import cv2
    from skimage.filters import threshold_otsu
    from skimage.morphology import remove_small_objects

    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] < 3 or rgb.dtype != np.uint8:
        raise WsssError(f"tissue_mask needs a uint8 RGB image, got {rgb.dtype} {rgb.shape}")
    rgb = np.ascontiguousarray(rgb[..., :3])
    sat = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)[..., 1]
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    if sat.max() > sat.min():
        t = float(threshold_otsu(sat))
    else:
        t = float(SAT_RANGE[1])
    t = min(max(t, SAT_RANGE[0]), SAT_RANGE[1])
    mask = ((sat > t) & (grey < WHITE_GREY)) | (grey < DARK_GREY)
    if min_size is None:
        min_size = max(4, int(mask.size * 2e-4))
    mask = remove_small_objects(mask, max_size=min_size) if min_size > 1 else mask
    mask = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    return mask


def tissue_fraction(mask: np.ndarray, y0: float, x0: float, y1: float, x1: float) -> float:
    """Fraction of tissue in the box ``[y0, y1) x [x0, x1)`` of ``mask`` coordinates
    (fractional; at least one mask pixel is looked at)."""
    h, w = mask.shape
    iy0 = min(max(int(np.floor(y0)), 0), h - 1)
    ix0 = min(max(int(np.floor(x0)), 0), w - 1)
    iy1 = min(max(int(np.ceil(y1)), iy0 + 1), h)
    ix1 = min(max(int(np.ceil(x1)), ix0 + 1), w)
    return float(mask[iy0:iy1, ix0:ix1].mean())
