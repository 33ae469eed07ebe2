"""Palette PNG: pixel values are the labels, colours the WSSS4LUAD palette."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...classes import LABEL_NAMES, PALETTE
from ...params import ExportFormat, ExportParams, RunRecord
from ...region import MaskGeometry
from ..masks import write_label_png
from ._common import as_mask, export_info, finish, require_geometry

FORMAT = ExportFormat.PNG
LABEL = "PNG"
SUFFIXES = (".png",)


def write(mask: Any, out: str | os.PathLike, params: ExportParams, **kw: Any) -> Path:
    """The registry's entry: :func:`export_png`."""
    kw.pop("image_id", None)
    return export_png(mask, out, **kw)


def export_png(mask: Any, out: str | os.PathLike, *, geometry: MaskGeometry | None,
               palette: Sequence[Sequence[int]] = PALETTE, record: RunRecord | None = None,
               class_names: Sequence[str] = LABEL_NAMES) -> Path:
    """Write a palette PNG (WSSS4LUAD colours; pixel values are the labels) that carries its
    geometry in a text chunk (:func:`write_label_png`)."""
    geometry = require_geometry(geometry)
    mask = as_mask(mask)
    out = write_label_png(mask, out, geometry, palette, class_names)
    return finish(out, record, export_info(FORMAT, mask, geometry, class_names))
