"""Reading an H&E image (patch or photo) as ``uint8 (H, W, 3)`` RGB: the one policy.

Every reader of images (training patches, ``predict``/``tune`` inputs, PNG/JPEG slides and
the levels of TIFF slides) ends up here, so training and inference see the same pixels:

- grey is repeated into R, G and B; a palette image becomes its colours;
- an alpha channel is composited onto **white** (what glass looks like under the scanner):
  a transparent pixel is background, never black tissue;
- 16-bit, 32-bit and float data are scaled to 0..255 by :func:`to_rgb8`'s range;
- grey + alpha (2 channels) is refused: a 2-channel file is far more often a mask or a
  multiplexed image than a photo (``docs/images-and-masks.md``).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .. import WsssError

#: The value transparent pixels take (glass).
GLASS = 255


def flatten_alpha(arr: np.ndarray) -> np.ndarray:
    """``(h, w, 4)`` -> ``(h, w, 3)``: the colour composited onto white by its alpha.

    ``arr`` may be any real dtype; alpha is scaled by the dtype's maximum (1.0 for floats).
    """
    rgb, alpha = arr[..., :3], arr[..., 3:4]
    if arr.dtype == np.uint8:
        a = alpha.astype(np.uint16)
        return ((rgb.astype(np.uint16) * a + GLASS * (255 - a) + 127) // 255).astype(np.uint8)
    top = float(np.iinfo(arr.dtype).max) if arr.dtype.kind in "ui" else 1.0
    a = np.clip(alpha.astype(np.float32) / top, 0.0, 1.0)
    return (rgb.astype(np.float32) * a + top * (1.0 - a)).astype(arr.dtype)


def to_rgb8(arr: np.ndarray, scale: tuple[float, float] | None = None) -> np.ndarray:
    """``(h, w, c)`` with c in 1, 3, 4 and any real dtype -> ``(h, w, 3) uint8``.

    Alpha is composited onto white (:func:`flatten_alpha`); non-uint8 data are mapped from
    ``scale`` (default ``(0, 255)``) to 0..255.
    """
    c = arr.shape[-1]
    if c == 4:
        arr = flatten_alpha(arr)
    elif c == 1:
        arr = np.repeat(arr, 3, axis=-1)
    if arr.dtype != np.uint8:
        lo, hi = scale if scale is not None else (0.0, 255.0)
        f = (arr.astype(np.float32) - lo) * (255.0 / max(hi - lo, 1e-12))
        arr = np.clip(f + 0.5, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


def pil_to_rgb(im: Any, name: Any) -> np.ndarray:
    """An opened PIL image -> ``uint8 (H, W, 3)`` by the policy above (``name`` for errors)."""
    if im.mode in ("LA", "La"):
        raise WsssError(f"'{name}' has 2 channels (grey + alpha); an image must be grey, RGB "
                        "or RGBA")
    if im.mode in ("P", "PA"):
        im = im.convert("RGBA" if im.mode == "PA" or "transparency" in im.info else "RGB")
    elif im.mode in ("CMYK", "YCbCr", "1", "RGBX", "RGBa"):
        im = im.convert("RGB")
    elif im.mode == "L" and "transparency" in im.info:
        im = im.convert("RGBA")
    arr = np.asarray(im)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.dtype != np.uint8:  # 16/32-bit grey: scale by its own range
        lo, hi = float(arr.min(initial=0)), float(arr.max(initial=1))
        return to_rgb8(arr, (lo, hi if hi > lo else lo + 1))
    return to_rgb8(arr)


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as ``uint8 (H, W, 3)`` RGB (alpha onto white, grey expanded).

    Raises:
        WsssError: the file is missing, not an image, damaged, or grey + alpha.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            return pil_to_rgb(im, path)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise WsssError(f"cannot read image '{path}': {err}") from err
