"""Island rules: small tumor / stroma islands enclosed by normal tissue become normal.

Normal lung (alveoli, bronchi) rarely hosts a few-hundred-pixel patch of tumor or stroma;
such islands are CAM noise or alveolar walls. An island is a connected region of
non-normal pixels that touches neither the image border nor anything but normal tissue
(8-connectivity), with at most ``max_size`` pixels. Background inside it (lumina) stays
background. The optional reverse trick turns small normal blobs into stroma.
"""

from __future__ import annotations

import numpy as np

from ..classes import NORMAL, STROMA, TUMOR


def _components(mask: np.ndarray):
    import cv2

    return cv2.connectedComponentsWithStats(mask.view(np.uint8), connectivity=8, ltype=cv2.CV_32S)


def islands_in_normal(labels: np.ndarray, max_size: int) -> np.ndarray:
    """Tumor / stroma pixels of small non-normal regions enclosed by normal become normal."""
    if max_size <= 0 or not (labels == NORMAL).any():
        return labels
    import cv2

    n, cc, stats, _ = _components(labels != NORMAL)
    x, y, w, h, area = (stats[:, i] for i in (cv2.CC_STAT_LEFT, cv2.CC_STAT_TOP,
                                               cv2.CC_STAT_WIDTH, cv2.CC_STAT_HEIGHT,
                                               cv2.CC_STAT_AREA))
    H, W = labels.shape
    inner = (x > 0) & (y > 0) & (x + w < W) & (y + h < H)
    pick = np.flatnonzero(inner & (area <= max_size))
    pick = pick[pick > 0]
    if pick.size == 0:
        return labels
    out = labels.copy()
    for i in pick:  # bounded windows: islands are small by definition
        ys, xs = slice(y[i], y[i] + h[i]), slice(x[i], x[i] + w[i])
        lab = out[ys, xs]
        sel = (cc[ys, xs] == i) & ((lab == TUMOR) | (lab == STROMA))
        lab[sel] = NORMAL
    return out


def small_normal_to_stroma(labels: np.ndarray, max_size: int) -> np.ndarray:
    """Normal regions smaller than ``max_size`` px become stroma (a public-solution trick)."""
    if max_size <= 0 or not (labels == NORMAL).any():
        return labels
    n, cc, stats, _ = _components(labels == NORMAL)
    small = np.flatnonzero(stats[1:, 4] < max_size) + 1
    if small.size == 0:
        return labels
    lut = np.zeros(n, bool)
    lut[small] = True
    out = labels.copy()
    out[lut[cc]] = STROMA
    return out
