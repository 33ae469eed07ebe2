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

    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] < 3 or rgb.dtype != np.uint8:
        raise WsssError(f"tissue_mask needs a uint8 RGB image, got {rgb.dtype} {rgb.shape}")
    rgb = np.ascontiguousarray(rgb[..., :3])
    sat = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)[..., 1]
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    if sat.max() > sat.min():
        t = float(otsu_threshold(sat))
    else:
        t = float(SAT_RANGE[1])
    t = min(max(t, SAT_RANGE[0]), SAT_RANGE[1])
    mask = ((sat > t) & (grey < WHITE_GREY)) | (grey < DARK_GREY)
    if min_size is None:
        min_size = max(4, int(mask.size * 2e-4))
    mask = remove_specks(mask, min_size) if min_size > 1 else mask
    mask = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    return mask


def otsu_threshold(values: np.ndarray) -> int:
    """Otsu's threshold of uint8 ``values`` (as ``skimage.filters.threshold_otsu``: one bin
    per grey level from the minimum to the maximum; pixels ``> t`` are the upper class).

    numpy only: scikit-image's import (scipy) cost a fresh process ~0.2-1 s (issue 14)."""
    counts = np.bincount(np.asarray(values, np.uint8).ravel(), minlength=256).astype(np.float64)
    nz = np.flatnonzero(counts)
    lo, hi = int(nz[0]), int(nz[-1])
    if lo == hi:
        return lo
    counts = counts[lo:hi + 1]
    centers = np.arange(lo, hi + 1, dtype=np.float64)
    w1 = np.cumsum(counts)
    w2 = np.cumsum(counts[::-1])[::-1]
    m1 = np.cumsum(counts * centers) / w1
    m2 = (np.cumsum((counts * centers)[::-1]) / w2[::-1])[::-1]
    between = w1[:-1] * w2[1:] * (m1[:-1] - m2[1:]) ** 2
    return lo + int(np.argmax(between))


def remove_specks(mask: np.ndarray, max_size: int) -> np.ndarray:
    """``mask`` without its 4-connected components of at most ``max_size`` px (as
    ``skimage.morphology.remove_small_objects(mask, max_size=...)``), with OpenCV."""
    import cv2

    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8),
                                                           connectivity=4)
    small = stats[:, cv2.CC_STAT_AREA] <= max_size
    small[0] = False  # the background
    return mask & ~small[labels] if n > 1 else mask.copy()


def tissue_fraction(mask: np.ndarray, y0: float, x0: float, y1: float, x1: float) -> float:
    """Fraction of tissue in the box ``[y0, y1) x [x0, x1)`` of ``mask`` coordinates
    (fractional; at least one mask pixel is looked at)."""
    h, w = mask.shape
    iy0 = min(max(int(np.floor(y0)), 0), h - 1)
    ix0 = min(max(int(np.floor(x0)), 0), w - 1)
    iy1 = min(max(int(np.ceil(y1)), iy0 + 1), h)
    ix1 = min(max(int(np.ceil(x1)), ix0 + 1), w)
    return float(mask[iy0:iy1, ix0:ix1].mean())
