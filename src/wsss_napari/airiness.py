"""Airiness: normal lung parenchyma is mostly air, tumor and stroma are dense.

Why: after the epithelium prior (:mod:`wsss_napari.epithelium`) splits tumor from the rest,
normal lung is the weak class, confused with stroma both ways (on the weak-label benchmark
about half of the normal pixels come out as stroma and as many stroma pixels as normal).
Alveoli are thin septa around air spaces, which H&E shows as glass. The fraction of glass
within about 127 um of a pixel separates normal from stroma with a pixel AUC of 0.91 and
from tumor with 0.93 on the 31 WSSS4LUAD images (medians 0.47 normal, 0.22 stroma, 0.26
tumor), with no model at all.

It enters the tissue prior as a soft switch ``a = sigmoid((density - threshold) / SLOPE)``:
normal gets ``a``, tumor and stroma ``1 - a`` (times their epithelium factors). The
threshold (``CamParams.air_threshold``), chosen per fold on the training images' masks of
the benchmark, was 0.40 or 0.45 every time; the default, 0.40, is the best on all 31
images' masks with the shipped model (as its post-processing was tuned); ``docs/training.md``,
*Airiness*.
"""

from __future__ import annotations

import numpy as np

#: Glass: grey level above this (the post-processing's 'grey' glass rule, at its default).
WHITE = 200
#: Width of the neighbourhood whose glass fraction is measured, in microns.
WINDOW_UM = 127.0
#: Glass in a connected region larger than this (um^2, 0.05 mm^2) is the slide's background
#: or a large vessel or bronchus lumen, not alveoli: it does not count. (No glass region of
#: the 31 WSSS4LUAD images is that large inside tissue; 0.02 mm^2 would cut real alveolar
#: spaces: normal IoU 0.41 -> 0.30 on the benchmark.)
MAX_HOLE_UM2 = 50_000.0
#: Softness of the switch around the threshold (glass fraction).
SLOPE = 0.06
#: The class that airiness speaks for.
ALVEOLAR_CLASSES = frozenset({"normal"})


def glass_fraction(rgb: np.ndarray, mpp: float, window_um: float = WINDOW_UM,
                   max_hole_um2: float = MAX_HOLE_UM2) -> np.ndarray:
    """float32 (H, W): the fraction of glass pixels in a ``window_um`` box around each
    pixel of an RGB image at ``mpp`` microns per pixel (box mean, reflected borders).

    Only holes count: glass in connected regions larger than ``max_hole_um2`` (the slide's
    background next to a tissue edge) does not, so tissue edges do not look alveolar.
    """
    import cv2

    grey = cv2.cvtColor(np.ascontiguousarray(rgb[..., :3], np.uint8), cv2.COLOR_RGB2GRAY)
    glass = (grey > WHITE).astype(np.uint8)
    if max_hole_um2 > 0:
        n, labels, stats, _ = cv2.connectedComponentsWithStats(glass, connectivity=8)
        big = np.flatnonzero(stats[1:, cv2.CC_STAT_AREA] > max_hole_um2 / mpp**2) + 1
        if len(big):
            glass[np.isin(labels, big)] = 0
    k = max(1, int(round(window_um / mpp)))
    return cv2.blur(glass.astype(np.float32), (k, k))


def alveolar_switch(fraction: np.ndarray, threshold: float) -> np.ndarray:
    """``a`` in [0, 1]: near 1 where the glass fraction is well above ``threshold``."""
    z = np.clip((np.asarray(fraction, np.float32) - threshold) / SLOPE, -60.0, 60.0)
    return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)
