"""Island rules: small tumor / stroma islands enclosed by normal tissue become normal.

Normal lung (alveoli, bronchi) rarely hosts a few-hundred-pixel patch of tumor or stroma;
such islands are CAM noise or alveolar walls. An island is a connected region of
non-normal pixels that touches neither the image border nor anything but normal tissue
(8-connectivity), with at most ``max_size`` pixels. Background inside it (lumina) stays
background. The optional reverse trick turns small normal blobs into stroma.
"""

from __future__ import annotations

import numpy as np

from ..classes import NORMAL
from ._fast import areas, components, lookup, scratch

# the uint8 arithmetic below relies on TUMOR = 0, STROMA = 1, NORMAL = 2 (classes.py)


def islands_in_normal(labels: np.ndarray, max_size: int) -> np.ndarray:
    """Tumor / stroma pixels of small non-normal regions enclosed by normal become normal.

    Changing T / S (0, 1) to NORMAL (2) is ``max(labels, 2 * picked & T/S)``: uint8 passes,
    no boolean indexing.
    """
    import cv2

    if max_size <= 0:
        return labels
    non_normal = scratch("u8a", labels.shape, np.uint8)
    cv2.compare(labels, NORMAL, cv2.CMP_NE, non_normal)
    if cv2.countNonZero(non_normal) == non_normal.size:
        return labels
    n, ids = components(non_normal, "cc")
    area = areas(ids, n)
    pick = (area <= max_size) & (area > 0)
    pick[0] = False
    # regions touching the image border may continue outside it: not known to be enclosed
    for edge in (ids[0], ids[-1], ids[:, 0], ids[:, -1]):
        pick[edge] = False
    if not pick.any():
        return labels
    to_normal = lookup(pick.astype(np.uint8) * np.uint8(NORMAL), ids, non_normal)  # 0 / 2
    tumor_or_stroma = scratch("u8b", labels.shape, np.uint8)
    cv2.compare(labels, NORMAL, cv2.CMP_LT, tumor_or_stroma)  # TUMOR=0, STROMA=1
    cv2.bitwise_and(to_normal, tumor_or_stroma, to_normal)
    return cv2.max(labels, to_normal)


def small_normal_to_stroma(labels: np.ndarray, max_size: int) -> np.ndarray:
    """Normal regions smaller than ``max_size`` px become stroma (a public-solution trick)."""
    import cv2

    if max_size <= 0:
        return labels
    normal = scratch("u8a", labels.shape, np.uint8)
    cv2.compare(labels, NORMAL, cv2.CMP_EQ, normal)
    if not cv2.countNonZero(normal):
        return labels
    n, ids = components(normal, "cc")
    small = areas(ids, n) < max_size
    small[0] = False
    if not small.any():
        return labels
    # NORMAL (2) - 1 = STROMA (1) on the picked pixels
    return cv2.subtract(labels, lookup(small.view(np.uint8), ids, normal))
