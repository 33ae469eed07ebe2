"""Training augmentations on ``uint8`` RGB patches (numpy + OpenCV), with masks kept aligned.

Every function takes an explicit ``numpy.random.Generator`` so a run is reproducible from its
seed. Geometric transforms move an optional label mask with the image (nearest neighbour);
colour transforms touch the image only. Label-mixing transforms (CutMix, mosaic) return the
labels that stay true for the mixed image: the union of the classes still visible, which is
exact when masks are given and follows from single-label donors when they are not.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..classes import BACKGROUND

Array = np.ndarray
IGNORE = 255

# Ruifrok & Johnston H&E-DAB stain matrix, as in skimage.color (rows: H, E, DAB in OD space).
_RGB_FROM_HED = np.array(
    [[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=np.float64
)
_RGB_FROM_HED /= np.linalg.norm(_RGB_FROM_HED, axis=1, keepdims=True)
_HED_FROM_RGB = np.linalg.inv(_RGB_FROM_HED).astype(np.float32)
_RGB_FROM_HED = _RGB_FROM_HED.astype(np.float32)
#: Optical density of each uint8 value: -log((v + 1) / 256), a lookup instead of a log per pixel.
_OD_LUT = (-np.log((np.arange(256, dtype=np.float64) + 1.0) / 256.0)).astype(np.float32)


def random_flip(rgb: Array, mask: Array | None, rng: np.random.Generator
                ) -> tuple[Array, Array | None]:
    """Random horizontal and vertical flips (each with probability 0.5)."""
    if rng.random() < 0.5:
        rgb = rgb[:, ::-1]
        mask = mask[:, ::-1] if mask is not None else None
    if rng.random() < 0.5:
        rgb = rgb[::-1]
        mask = mask[::-1] if mask is not None else None
    return np.ascontiguousarray(rgb), (np.ascontiguousarray(mask) if mask is not None else None)


def random_rot90(rgb: Array, mask: Array | None, rng: np.random.Generator
                 ) -> tuple[Array, Array | None]:
    """Rotate by a random multiple of 90 degrees: tissue has no preferred orientation, and
    with the flips this covers all eight symmetries of the square."""
    k = int(rng.integers(0, 4))
    if k == 0:
        return rgb, mask
    rgb = np.ascontiguousarray(np.rot90(rgb, k))
    return rgb, (np.ascontiguousarray(np.rot90(mask, k)) if mask is not None else None)


def random_resized_crop(
    rgb: Array, mask: Array | None, size: int, rng: np.random.Generator,
    scale: tuple[float, float] = (0.25, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[Array, Array | None]:
    """Crop a random area fraction in ``scale`` and aspect ratio in ``ratio``; resize to size².

    Same sampling rule as torchvision's RandomResizedCrop (10 tries, then a centre crop).
    """
    import cv2

    h, w = rgb.shape[:2]
    area = h * w
    log_r = np.log(ratio)
    box = None
    for _ in range(10):
        target = area * rng.uniform(*scale)
        ar = float(np.exp(rng.uniform(*log_r)))
        cw = int(round(np.sqrt(target * ar)))
        ch = int(round(np.sqrt(target / ar)))
        if 0 < cw <= w and 0 < ch <= h:
            y = int(rng.integers(0, h - ch + 1))
            x = int(rng.integers(0, w - cw + 1))
            box = (y, x, ch, cw)
            break
    if box is None:
        s = min(h, w)
        box = ((h - s) // 2, (w - s) // 2, s, s)
    y, x, ch, cw = box
    out = cv2.resize(rgb[y:y + ch, x:x + cw], (size, size), interpolation=cv2.INTER_LINEAR)
    m = None
    if mask is not None:
        m = cv2.resize(mask[y:y + ch, x:x + cw], (size, size), interpolation=cv2.INTER_NEAREST)
    return out, m


def random_crop(rgb: Array, mask: Array | None, size: int, rng: np.random.Generator
                ) -> tuple[Array, Array | None]:
    """A ``size``² crop at a random position; smaller images are padded (white / ignore)."""
    h, w = rgb.shape[:2]
    ph, pw = max(0, size - h), max(0, size - w)
    if ph or pw:
        rgb = np.pad(rgb, ((0, ph), (0, pw), (0, 0)), constant_values=255)
        if mask is not None:
            mask = np.pad(mask, ((0, ph), (0, pw)), constant_values=IGNORE)
        h, w = rgb.shape[:2]
    y = int(rng.integers(0, h - size + 1))
    x = int(rng.integers(0, w - size + 1))
    return (np.ascontiguousarray(rgb[y:y + size, x:x + size]),
            None if mask is None else np.ascontiguousarray(mask[y:y + size, x:x + size]))


def hed_jitter(rgb: Array, strength: float, rng: np.random.Generator) -> Array:
    """Stain augmentation: scale and shift each H, E, DAB concentration by up to ``strength``.

    Colour deconvolution (Ruifrok & Johnston, the matrix of ``skimage.color.rgb2hed``) done as
    one 3x3 matrix product in optical-density space; labs differ mostly in stain amounts.
    """
    if strength <= 0:
        return rgb
    alpha = rng.uniform(1 - strength, 1 + strength, 3).astype(np.float32)
    beta = rng.uniform(-strength, strength, 3).astype(np.float32)
    od = _OD_LUT[rgb]                                   # (H, W, 3)
    hed = od @ _HED_FROM_RGB                            # concentrations
    hed = hed * alpha + beta
    od2 = np.maximum(hed @ _RGB_FROM_HED, 0.0)
    out = np.exp(-od2) * 256.0 - 1.0
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def brightness_contrast(rgb: Array, rng: np.random.Generator, brightness: float = 0.1,
                        contrast: float = 0.1) -> Array:
    """Random brightness (additive, fraction of 255) and contrast (around the mean) change."""
    b = rng.uniform(-brightness, brightness) * 255.0
    c = rng.uniform(1 - contrast, 1 + contrast)
    lut = (np.arange(256, dtype=np.float32) - 128.0) * c + 128.0 + b
    return np.clip(lut, 0, 255).astype(np.uint8)[rgb]


def gaussian_blur(rgb: Array, rng: np.random.Generator, sigma: tuple[float, float] = (0.1, 2.0)
                  ) -> Array:
    """Gaussian blur with a random sigma (scanner focus varies)."""
    import cv2

    s = float(rng.uniform(*sigma))
    return cv2.GaussianBlur(rgb, (0, 0), sigmaX=s, sigmaY=s)


def labels_from_mask(mask: Array, n_classes: int = 3, min_fraction: float = 0.0) -> Array:
    """Classes present in a mask (area above ``min_fraction`` of the labelled pixels)."""
    counts = np.bincount(mask.ravel(), minlength=256)[:n_classes].astype(np.float64)
    total = max(1.0, float(np.bincount(mask.ravel(), minlength=256)[: BACKGROUND + 1].sum()))
    return (counts > max(0.0, min_fraction * total)).astype(np.float32)


def cutmix(
    a: Array, labels_a: Array, b: Array, labels_b: Array, rng: np.random.Generator,
    mask_a: Array | None = None, mask_b: Array | None = None,
    area: tuple[float, float] = (0.1, 0.4),
) -> tuple[Array, Array, Array | None]:
    """Paste a random box of ``b`` into ``a``; return (image, labels, mask).

    Labels are the union of the classes visible in the result. With masks they are computed
    from the mixed mask (area > 0). Without masks they are ``labels_a | labels_b``, which is
    exact when ``b`` is a single-label patch (any part of it shows that class) and the box
    leaves most of ``a`` visible (``area`` at most 0.4 by default) — callers pick such donors.
    Both images must have the same shape.
    """
    h, w = a.shape[:2]
    frac = rng.uniform(*area)
    bh = max(1, min(h, int(round(h * np.sqrt(frac)))))
    bw = max(1, min(w, int(round(w * np.sqrt(frac)))))
    y = int(rng.integers(0, h - bh + 1))
    x = int(rng.integers(0, w - bw + 1))
    out = a.copy()
    out[y:y + bh, x:x + bw] = b[y:y + bh, x:x + bw]
    m = None
    if mask_a is not None and mask_b is not None:
        m = mask_a.copy()
        m[y:y + bh, x:x + bw] = mask_b[y:y + bh, x:x + bw]
        labels = labels_from_mask(m, len(labels_a))
    else:
        labels = np.maximum(labels_a, labels_b).astype(np.float32)
    return out, labels, m


def mosaic(tiles: Sequence[tuple[Array, Array, Array | None]], size: int,
           rng: np.random.Generator) -> tuple[Array, Array, Array | None]:
    """A 2x2 mosaic of four patches around a random centre; return (image, labels, mask).

    Meant for single-label patches (PistoSeg): each quadrant shows one known class, so the
    mosaic is a fully-labelled multi-class image. Labels are the union of the tiles whose
    quadrant is non-empty (from the masks when all tiles have one).
    """
    import cv2

    if len(tiles) != 4:
        raise ValueError("mosaic needs exactly four tiles")
    cy = int(rng.integers(size // 4, 3 * size // 4 + 1))
    cx = int(rng.integers(size // 4, 3 * size // 4 + 1))
    boxes = [(0, 0, cy, cx), (0, cx, cy, size - cx), (cy, 0, size - cy, cx),
             (cy, cx, size - cy, size - cx)]
    out = np.empty((size, size, 3), np.uint8)
    with_masks = all(t[2] is not None for t in tiles)
    m = np.empty((size, size), np.uint8) if with_masks else None
    labels = np.zeros_like(np.asarray(tiles[0][1], dtype=np.float32))
    for (rgb, lab, msk), (y, x, bh, bw) in zip(tiles, boxes, strict=True):
        if bh <= 0 or bw <= 0:
            continue
        out[y:y + bh, x:x + bw] = cv2.resize(rgb, (bw, bh), interpolation=cv2.INTER_AREA)
        if m is not None:
            m[y:y + bh, x:x + bw] = cv2.resize(msk, (bw, bh), interpolation=cv2.INTER_NEAREST)
        else:
            labels = np.maximum(labels, np.asarray(lab, dtype=np.float32))
    if m is not None:
        labels = labels_from_mask(m, len(labels))
    return out, labels, m

