"""Airiness: normal lung parenchyma is mostly air, tumor and stroma are dense.

Why: after the epithelium prior (:mod:`wsss_napari.epithelium`) splits tumor from the rest,
normal lung is the weak class, confused with stroma both ways (on the weak-label benchmark
about half of the normal pixels come out as stroma and as many stroma pixels as normal).
Alveoli are thin septa around air spaces, which H&E shows as glass. The fraction of glass
within 383 um of a pixel separates normal from stroma with a pixel AUC of 0.96 and from
tumor with 0.996 on the 31 WSSS4LUAD images (127 um: 0.91 and 0.93), with no model at all.

It enters the tissue prior as a soft switch ``a = sigmoid((density - threshold) / SLOPE)``:
normal gets ``a``, tumor and stroma ``1 - a`` (times their epithelium factors). The
threshold (``CamParams.air_threshold``), chosen per fold on the training images' masks of
the benchmark, was 0.40-0.45 in 5 of 6 folds; the default, 0.40, is the better of the two
on held-out images (``docs/training.md``, *Airiness* and *Airiness over a wider window*).

:func:`regional_vote` (``CamParams.context_um``, off by default) decides normal versus
stroma by the region instead of the pixel.
"""

from __future__ import annotations

import numpy as np

#: Glass: grey level above this (the post-processing's 'grey' glass rule, at its default).
WHITE = 200
#: Width of the neighbourhood whose glass fraction is measured, in microns. (383 um: normal
#: lung is a region, not a pixel; 127 um, the first choice, left the walls of vessels and
#: bronchioles inside normal lung as stroma: benchmark mIoU 0.587 / 0.567 -> 0.610 / 0.585,
#: seeds 0 / 1, the shipped ensemble, threshold per fold.)
WINDOW_UM = 383.0
#: Glass in a connected region larger than this (um^2, 0.05 mm^2) is the slide's background
#: or a large vessel or bronchus lumen, not alveoli: it does not count. (No glass region of
#: the 31 WSSS4LUAD images is that large inside tissue; 0.02 mm^2 would cut real alveolar
#: spaces: normal IoU 0.41 -> 0.30 on the benchmark.)
MAX_HOLE_UM2 = 50_000.0
#: Softness of the switch around the threshold (glass fraction).
SLOPE = 0.06
#: The class that airiness speaks for.
ALVEOLAR_CLASSES = frozenset({"normal"})
#: The two classes the regional vote shares probability between (:func:`regional_vote`).
VOTE_CLASSES = ("normal", "stroma")


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


def regional_vote(prob: np.ndarray, class_names, sigma_px: float) -> np.ndarray:
    """Probabilities ``(C + 1, H, W)`` whose normal-versus-stroma split is the region's.

    Why: normal lung and stroma are tissue types of regions, not of pixels. Inside normal
    lung the walls of vessels and bronchioles look like stroma pixel by pixel, and WSSS4LUAD
    (like a pathologist) labels them normal; loose fibrous stroma with a few holes looks
    alveolar. Each pixel keeps its probability mass of normal + stroma; the share of normal
    in it becomes the Gaussian-weighted share (sigma ``sigma_px``) of the neighbourhood's
    normal mass in its normal + stroma mass. Tumor and the other classes keep their share
    of the tissue, and as with the epithelium prior no pixel turns from tissue into glass
    or back (:func:`~wsss_napari.epithelium.keep_tissue_or_glass`). A no-op without both
    classes or with ``sigma_px`` <= 0.
    """
    import cv2

    from .epithelium import keep_tissue_or_glass

    names = list(class_names)
    if sigma_px <= 0 or not all(c in names for c in VOTE_CLASSES):
        return prob
    a, b = (names.index(c) for c in VOTE_CLASSES)
    pa, pb = prob[a].astype(np.float32), prob[b].astype(np.float32)
    k = 2 * int(np.ceil(3 * sigma_px)) + 1

    def blur(x: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(x, (k, k), sigma_px, borderType=cv2.BORDER_REFLECT)

    both = pa + pb
    share = blur(pa) / np.maximum(blur(both), 1e-6)
    tissue = prob[:len(names)].astype(np.float32)  # a copy
    tissue[a], tissue[b] = both * share, both * (1.0 - share)
    return keep_tissue_or_glass(tissue, prob)
