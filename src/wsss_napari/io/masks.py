"""Label masks on disk: the one way to read and write them.

A mask is ``uint8 (H, W)``: ``0`` tumor, ``1`` stroma, ``2`` normal, ``3`` background and
``255`` unlabelled. Every reader of a mask file (training masks, ``eval``, ``tune`` and
``predict`` inputs, ``export`` sources) calls :func:`read_mask`, every PNG mask the project
writes (``predict``, ``pseudo``, exports, generated data sets) comes from
:func:`write_label_png`. The policy (``docs/images-and-masks.md``):

- accepted: palette PNGs (the pixel values are the labels, whatever the palette's colours),
  grey PNGs (values are labels), and RGB/RGBA images in the WSSS4LUAD colours (mapped back
  to labels; alpha ignored);
- refused, with one line naming the file: grey/palette + alpha (2 channels), an RGB image
  with more than :data:`MAX_OFF_PALETTE` of its pixels in other colours (a photo), and any
  value that is neither a class nor ``255``;
- written: a palette PNG in the WSSS4LUAD colours, atomically, with the mask's
  :class:`~wsss_napari.region.MaskGeometry` in a ``wsss_napari`` text chunk
  (:func:`read_png_meta`) so the next command knows where it lies.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import WsssError
from ..classes import PALETTE, palette_flat
from ..region import MaskGeometry
from .atomic import atomic_path

UNLABELLED = 255
#: Largest share of an RGB mask's pixels whose colour may be outside the palette.
MAX_OFF_PALETTE = 0.01
#: Key of the metadata the project writes into its files (PNG text chunk, OME description).
DESC_KEY = "wsss_napari"
#: PIL modes of one channel of labels.
LABEL_MODES = ("P", "L", "1", "I", "I;16")
#: PIL modes read as colours in the palette.
COLOUR_MODES = ("RGB", "RGBA", "RGBX")
_TWO_CHANNELS = ("LA", "La", "PA")
_MAX_PNG_PIXELS = 100_000_000


def check_label_values(labels: np.ndarray, source: Any,
                       n_classes: int = len(PALETTE)) -> None:
    """Refuse values that are neither a class (``0..n_classes - 1``) nor ``255`` (none)."""
    values = np.unique(np.asarray(labels))
    bad = values[(values >= n_classes) & (values != UNLABELLED)]
    if bad.size:
        raise WsssError(f"'{source}' holds label {int(bad[0])}"
                        + (f" (and {bad.size - 1} other values)" if bad.size > 1 else "")
                        + f": mask values must be 0..{n_classes - 1} (0 tumor, 1 stroma, "
                        f"2 normal, 3 background) or {UNLABELLED} (none)")


def check_mask_mode(mode: str, source: Any) -> None:
    """Refuse a PIL mode that is not one channel of labels or colours of the palette."""
    if mode in _TWO_CHANNELS:
        raise WsssError(f"'{source}' has 2 channels ({mode}: a value and an alpha); a mask "
                        "must be one channel of labels (palette or grey PNG)")
    if mode not in LABEL_MODES + COLOUR_MODES:
        raise WsssError(f"'{source}' has image mode {mode}; a mask must be a palette or grey "
                        "PNG of labels (or RGB in the WSSS4LUAD colours)")


def labels_from_colours(rgb: np.ndarray, source: Any,
                        palette: Sequence[Sequence[int]] = PALETTE) -> np.ndarray:
    """``(H, W, 3)`` colours of ``palette`` -> labels (255 elsewhere); refuses a photo."""
    rgb = np.asarray(rgb)[..., :3]
    labels = np.full(rgb.shape[:2], UNLABELLED, np.uint8)
    for i, colour in enumerate(palette):
        labels[(rgb == np.asarray(colour, rgb.dtype)).all(axis=2)] = i
    off = float(np.mean(labels == UNLABELLED)) if labels.size else 0.0
    if off > MAX_OFF_PALETTE:
        raise WsssError(f"'{source}' is not a label mask: {off:.0%} of its pixels have colours "
                        "outside the WSSS4LUAD palette (an RGB photo?); give a palette or "
                        "grey PNG of labels 0..3")
    return labels


def read_mask(path: str | os.PathLike, n_classes: int = len(PALETTE)) -> np.ndarray:
    """Read a label mask image (PNG, or any image PIL reads) as ``uint8 (H, W)``.

    Raises:
        WsssError: unreadable, 2 channels, an RGB photo, or values outside the classes.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            check_mask_mode(im.mode, path)
            im.load()
            a = np.asarray(im.convert("RGB") if im.mode in COLOUR_MODES else im)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
        raise WsssError(f"cannot read the mask '{path}': {err}") from err
    if a.ndim == 3:
        return labels_from_colours(a, path)
    check_label_values(a, path, n_classes)
    return a.astype(np.uint8)


def check_mask_file(path: str | os.PathLike) -> tuple[int, int]:
    """Cheap check of a mask file (header and checksums, mode): its ``(height, width)``.

    The values are checked when the mask is read (:func:`read_mask`).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            mode, (w, h) = im.mode, im.size
            im.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise WsssError(f"cannot read the mask '{path}': {type(err).__name__}: {err}") from err
    check_mask_mode(mode, path)
    return h, w


def as_label_array(mask: Any) -> Any:
    """A 2-D label array-like as it is (uint8), or converted after a range check."""
    if not hasattr(mask, "shape") or len(mask.shape) != 2:
        raise WsssError(f"a mask must be a 2-D label array, got shape "
                        f"{getattr(mask, 'shape', None)}")
    if np.dtype(getattr(mask, "dtype", np.uint8)) != np.uint8:
        mask = np.asarray(mask)
        if mask.size and (mask.min() < 0 or mask.max() > 255):
            raise WsssError("mask values must be labels in 0..255")
        mask = mask.astype(np.uint8)
    return mask


def write_label_png(mask: Any, out: str | os.PathLike, geometry: MaskGeometry | None = None,
                    palette: Sequence[Sequence[int]] = PALETTE,
                    class_names: Sequence[str] | None = None) -> Path:
    """Atomic palette PNG of labels with its geometry in a ``wsss_napari`` text chunk.

    Every PNG mask of the project (``predict``, ``pseudo``, exports, generated data sets)
    goes through this, so :func:`read_png_meta` knows where any of them lies.
    """
    from PIL import Image, PngImagePlugin

    mask = as_label_array(mask)
    if mask.shape[0] * mask.shape[1] > _MAX_PNG_PIXELS:
        raise WsssError(f"a {mask.shape[1]}x{mask.shape[0]} mask is too large for PNG; "
                        "export it as ome-tiff (tiled, pyramidal)")
    img = Image.fromarray(np.ascontiguousarray(np.asarray(mask, np.uint8)), mode="P")
    img.putpalette(palette_flat(palette))
    info = PngImagePlugin.PngInfo()
    chunk: dict[str, Any] = {}
    if geometry is not None:
        chunk["geometry"] = geometry.to_dict()
    if class_names is not None:
        chunk["class_names"] = list(class_names)
    if chunk:
        info.add_itxt(DESC_KEY, json.dumps(chunk))
    out = Path(out)
    with atomic_path(out) as tmp:
        img.save(tmp, format="PNG", optimize=False, pnginfo=info)
    return out


def read_png_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The ``wsss_napari`` text chunk of a PNG (``geometry`` as a :class:`MaskGeometry`)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            text = (getattr(im, "text", None) or {}).get(DESC_KEY)
    except OSError:
        return {}
    try:
        meta = json.loads(text) if text else {}
    except ValueError:
        return {}
    if not isinstance(meta, dict):
        return {}
    if isinstance(meta.get("geometry"), dict):
        meta["geometry"] = MaskGeometry.from_dict(meta["geometry"])
    return meta
