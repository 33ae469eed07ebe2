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

    return cv2.connectedComponents(mask.view(np.uint8), connectivity=8, ltype=cv2.CV_32S)[1]


def islands_in_normal(labels: np.ndarray, max_size: int) -> np.ndarray:
    """Tumor / stroma pixels of small non-normal regions enclosed by normal become normal."""
    if max_size <= 0 or not (labels == NORMAL).any():
        return labels
    cc = _components(labels != NORMAL)
    area = np.bincount(cc.ravel())
    pick = (area <= max_size) & (area > 0)
    pick[0] = False
    # regions touching the image border may continue outside it: not known to be enclosed
    for edge in (cc[0], cc[-1], cc[:, 0], cc[:, -1]):
        pick[edge] = False
    if not pick.any():
        return labels
    sel = np.take(pick, cc) & ((labels == TUMOR) | (labels == STROMA))
    out = labels.copy()
    out[sel] = NORMAL
    return out


def small_normal_to_stroma(labels: np.ndarray, max_size: int) -> np.ndarray:
    """Normal regions smaller than ``max_size`` px become stroma (a public-solution trick)."""
    if max_size <= 0 or not (labels == NORMAL).any():
        return labels
    cc = _components(labels == NORMAL)
    small = np.bincount(cc.ravel()) < max_size
    small[0] = False
    if not small.any():
        return labels
    out = labels.copy()
    out[np.take(small, cc)] = STROMA
    return out
