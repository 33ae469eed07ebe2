"""Tissue classes in the WSSS4LUAD convention: label values, names and the challenge palette."""

from __future__ import annotations

from collections.abc import Sequence

TUMOR, STROMA, NORMAL, BACKGROUND = 0, 1, 2, 3

#: Foreground classes that CAMs are computed for, in label order.
CLASS_NAMES: tuple[str, ...] = ("tumor", "stroma", "normal")
#: All mask labels, including background (glass / white).
LABEL_NAMES: tuple[str, ...] = ("tumor", "stroma", "normal", "background")
#: WSSS4LUAD challenge palette, index = label value.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (0, 64, 128),
    (64, 128, 0),
    (243, 152, 0),
    (255, 255, 255),
)


def palette_flat(palette: Sequence[Sequence[int]] = PALETTE) -> list[int]:
    """A palette as a flat 768-entry list for PIL's ``Image.putpalette`` (256 colours at most)."""
    flat = [int(c) for rgb in palette for c in rgb][:768]
    return flat + [0] * (768 - len(flat))

