"""Test-time augmentation (TTA) of segmentation windows: flips, 90-degree rotations, scales.

A TTA set is named ``none``, ``hflip``, ``flips`` (horizontal, vertical and both), ``rot90``
(the four rotations) or ``d4`` (all eight symmetries of the square), optionally followed by
``+scales`` (each of them also at 0.75x and 1.25x the window size). Every view is run through
the model, its softmax mapped back to the original geometry (inverse flip / rotation,
resize), and the views' probabilities averaged. Windows are square, so rotations keep their
shape.
"""

from __future__ import annotations

from typing import Any

from .. import WsssError

#: Geometric sets: (rot90 count, horizontal flip, vertical flip) per view.
TTA_SETS: dict[str, tuple[tuple[int, bool, bool], ...]] = {
    "none": ((0, False, False),),
    "hflip": ((0, False, False), (0, True, False)),
    "flips": ((0, False, False), (0, True, False), (0, False, True), (0, True, True)),
    "rot90": tuple((k, False, False) for k in range(4)),
    "d4": tuple((k, f, False) for k in range(4) for f in (False, True)),
}
#: Scales of ``+scales``.
TTA_SCALES = (0.75, 1.0, 1.25)
#: Scaled windows are rounded to a multiple of this (the encoder's stride).
MULTIPLE = 32


def parse_tta(spec: str) -> tuple[tuple[tuple[int, bool, bool], ...], tuple[float, ...]]:
    """``(views, scales)`` of a TTA name such as ``d4+scales``.

    Raises:
        WsssError: an unknown name.
    """
    name, _, extra = str(spec).partition("+")
    if name not in TTA_SETS or extra not in ("", "scales"):
        names = ", ".join(TTA_SETS)
        raise WsssError(f"tta must be one of {names}, optionally with '+scales', not {spec!r}")
    return TTA_SETS[name], (TTA_SCALES if extra else (1.0,))


def _forward(view: tuple[int, bool, bool], x: Any) -> Any:
    import torch

    k, hf, vf = view
    if hf:
        x = torch.flip(x, dims=[3])
    if vf:
        x = torch.flip(x, dims=[2])
    return torch.rot90(x, k, dims=(2, 3)) if k else x


def _inverse(view: tuple[int, bool, bool], y: Any) -> Any:
    import torch

    k, hf, vf = view
    if k:
        y = torch.rot90(y, -k, dims=(2, 3))
    if vf:
        y = torch.flip(y, dims=[2])
    if hf:
        y = torch.flip(y, dims=[3])
    return y


def tta_probabilities(model: Any, x: Any, spec: str = "none") -> Any:
    """Softmax ``(B, C, H, W)`` of normalised input ``x`` averaged over the views of ``spec``."""
    import torch
    from torch.nn import functional as F

    views, scales = parse_tta(spec)
    h, w = x.shape[-2:]
    acc = None
    n = 0
    for s in scales:
        if s != 1.0:
            size = (max(MULTIPLE, round(h * s / MULTIPLE) * MULTIPLE),
                    max(MULTIPLE, round(w * s / MULTIPLE) * MULTIPLE))
            xs = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        else:
            xs = x
        for view in views:
            p = torch.softmax(model(_forward(view, xs)).float(), dim=1)
            p = _inverse(view, p)
            if p.shape[-2:] != (h, w):
                p = F.interpolate(p, size=(h, w), mode="bilinear", align_corners=False)
            acc = p if acc is None else acc + p
            n += 1
    return acc / n
