"""Glass / white detection: bright or unsaturated pixels are slide background, not tissue.

Used to force class 3 (background) where there is plainly no tissue, whatever the CAMs say.
Small white specks inside tissue (lumina, fat droplets smaller than ``min_size``) are not
glass, and small tissue specks on glass (dust) are.
"""

from __future__ import annotations

import math

import numpy as np

from .. import WsssError
from ..params import WhiteMethod
from ._fast import areas, components, lookup, scratch


def whiteness(image: np.ndarray, method: WhiteMethod | str) -> np.ndarray:
    """The uint8 channel that is thresholded: grey level, or 255 - HSV saturation.

    Both read "higher = whiter", so glass is always ``whiteness > threshold`` for grey and
    ``whiteness > 255 - threshold`` for saturation (see :func:`glass_mask`).
    """
    import cv2

    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] < 3:
        raise WsssError(f"glass detection needs an RGB image (H, W, 3), got shape {img.shape}")
    rgb = np.ascontiguousarray(img[..., :3], dtype=np.uint8)
    method = WhiteMethod(method)
    if method is WhiteMethod.GREY:
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    if method is WhiteMethod.SATURATION:
        return 255 - cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)[..., 1]
    raise WsssError(f"no whiteness channel for white_method={method.value!r}")


def threshold_whiteness(white: np.ndarray, method: WhiteMethod | str,
                        threshold: float) -> np.ndarray:
    """Raw glass mask from a :func:`whiteness` channel (before small-region cleanup)."""
    import cv2

    method = WhiteMethod(method)
    # grey level above the threshold, or saturation below it
    cut = float(threshold) if method is WhiteMethod.GREY else 255.0 - float(threshold)
    white = np.asarray(white)
    if white.dtype != np.uint8 or not math.isfinite(cut):
        return white > cut
    # integer levels: ``white > cut`` is ``white > floor(cut)``, one OpenCV pass writing 0 / 1
    floor = math.floor(cut)
    if floor < 0:
        return np.ones(white.shape, bool)
    if floor >= 255:
        return np.zeros(white.shape, bool)
    _, out = cv2.threshold(np.ascontiguousarray(white), floor, 1, cv2.THRESH_BINARY)
    return out.view(bool)


def remove_small(mask: np.ndarray, min_size: int) -> np.ndarray:
    """Drop 8-connected True regions smaller than ``min_size`` px and fill False holes as small.

    Both passes flip the pixels of small components, so each is one XOR with a per-component
    lookup (skipped when no component is small).
    """
    import cv2

    if min_size <= 1:
        return mask
    out = np.ascontiguousarray(mask, dtype=bool).copy()
    out8 = out.view(np.uint8)
    sel = scratch("u8a", out.shape, np.uint8)
    flip = scratch("u8b", out.shape, np.uint8)
    for value in (1, 0):
        cv2.compare(out8, value, cv2.CMP_EQ, sel)
        n, ids = components(sel, "cc")
        small = areas(ids, n) < min_size
        small[0] = False
        if small.any():
            cv2.bitwise_xor(out8, lookup(small.view(np.uint8), ids, flip), out8)
    return out


def glass_mask(image: np.ndarray, method: WhiteMethod | str, threshold: float,
               min_size: int = 0) -> np.ndarray | None:
    """Where the slide shows glass (bool (H, W)), or None for ``method='none'``.

    Args:
        image: uint8 RGB (H, W, 3).
        method: 'grey' (grey level > threshold) or 'saturation' (HSV saturation < threshold).
        threshold: in 0..255.
        min_size: glass regions and tissue holes smaller than this (px) are flipped.
    """
    method = WhiteMethod(method)
    if method is WhiteMethod.NONE:
        return None
    raw = threshold_whiteness(whiteness(image, method), method, threshold)
    return remove_small(raw, min_size)
