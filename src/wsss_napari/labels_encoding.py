"""The label encoding of napari Labels layers, and the one translation to and from the core.

The core, its files and the edit store use the WSSS4LUAD challenge encoding (``0`` tumor,
``1`` stroma, ``2`` normal, ``3`` background; :mod:`wsss_napari.classes`) with ``255`` for
"no label" (unlabelled mask pixels, uncorrected pixels of an edit store). napari reserves
``0`` for "nothing": its eraser writes it, its picker and fill bucket treat it as the
background, and it draws it transparent. So every Labels layer the plugin makes holds
``class + 1`` (``1`` tumor .. ``4`` background) and ``0`` for "no label / not corrected",
and says so in ``layer.metadata['wsss']['label_encoding']``. Widgets translate with
:func:`to_layer` when they fill a layer and :func:`from_layer` when they hand its data back
to the core; nothing else converts. No napari or Qt import here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import WsssError
from .classes import LABEL_NAMES, PALETTE

#: Core value of "no label" / "not corrected" (masks, edit stores).
UNLABELLED = 255
#: Layer value of "no label" / "not corrected" (what napari's eraser writes).
LAYER_NOTHING = 0
#: Layer value = core class value + OFFSET.
OFFSET = 1
#: Marker stored in ``layer.metadata['wsss']['label_encoding']``.
ENCODING = "class+1"
#: Layer values of the classes, in core order (tumor, stroma, normal, background).
LAYER_VALUES: tuple[int, ...] = tuple(i + OFFSET for i in range(len(LABEL_NAMES)))


def to_layer(core: Any) -> np.ndarray:
    """Core labels (``0..3``, ``255`` = no label) -> layer labels (``1..4``, ``0``).

    Raises:
        WsssError: a value is neither a class nor ``255``.
    """
    a = np.asarray(core)
    bad = (a >= len(LABEL_NAMES)) & (a != UNLABELLED)
    if a.size and bad.any():
        raise WsssError(f"labels hold value {int(a[bad].flat[0])}, which is no class "
                        f"(0..{len(LABEL_NAMES) - 1}, or {UNLABELLED} for none)")
    return np.where(a == UNLABELLED, LAYER_NOTHING, a.astype(np.int64) + OFFSET).astype(np.uint8)


def from_layer(layer_values: Any) -> np.ndarray:
    """Layer labels (``1..4``, ``0`` = nothing) -> core labels (``0..3``, ``255`` = none).

    Raises:
        WsssError: a value is above the last class (a label napari's "new label" made).
    """
    a = np.asarray(layer_values)
    top = len(LABEL_NAMES)
    if a.size and (a > top).any():
        raise WsssError(f"the layer holds label {int(a[a > top].flat[0])}, which is no class: "
                        f"paint with 1..{top} ({', '.join(LABEL_NAMES)}) or erase")
    return np.where(a == LAYER_NOTHING, UNLABELLED, a.astype(np.int64) - OFFSET).astype(np.uint8)


def layer_value(core_class: int) -> int:
    """The layer value of one core class (e.g. ``TUMOR`` -> 1)."""
    if not 0 <= int(core_class) < len(LABEL_NAMES):
        raise WsssError(f"no class {core_class}: classes are 0..{len(LABEL_NAMES) - 1}")
    return int(core_class) + OFFSET


def layer_colors(background_alpha: float = 0.0) -> dict[int | None, tuple[float, ...]]:
    """Layer value -> RGBA in [0, 1]: the challenge palette, ``0`` (and anything else)
    transparent; background (white) at ``background_alpha``."""
    colors: dict[int | None, tuple[float, ...]] = {
        v: (*(c / 255 for c in PALETTE[v - OFFSET]), 1.0) for v in LAYER_VALUES}
    colors[LAYER_VALUES[-1]] = (*colors[LAYER_VALUES[-1]][:3], float(background_alpha))
    colors[LAYER_NOTHING] = (0.0, 0.0, 0.0, 0.0)
    colors[None] = (0.0, 0.0, 0.0, 0.0)
    return colors


def is_layer_encoded(metadata: Any) -> bool:
    """True when a layer's ``metadata`` says it holds :data:`ENCODING` labels."""
    w = metadata.get("wsss") if isinstance(metadata, dict) else None
    return isinstance(w, dict) and w.get("label_encoding") == ENCODING


def core_labels(data: Any, metadata: Any) -> Any:
    """A Labels layer's data in the core encoding: translated when the layer's metadata says
    it is layer-encoded, else taken as it is (a mask file opened by another reader holds
    challenge values; a lazy array stays lazy)."""
    if is_layer_encoded(metadata):
        return from_layer(data)
    return np.asarray(data, np.uint8) if isinstance(data, np.ndarray) else data
