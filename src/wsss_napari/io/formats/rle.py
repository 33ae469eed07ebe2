"""RLE CSV: one row per image and class, Kaggle-style run-length encoding."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ... import WsssError
from ...classes import LABEL_NAMES
from ...params import ExportFormat, ExportParams, RunRecord
from ...region import MaskGeometry
from ..atomic import atomic_path
from ..masks import UNLABELLED
from ._common import as_mask, export_info, finish, require_geometry

FORMAT = ExportFormat.RLE
LABEL = "CSV (RLE)"
SUFFIXES = (".csv",)


def write(mask: Any, out: str | os.PathLike, params: ExportParams, **kw: Any) -> Path:
    """The registry's entry: :func:`export_rle` in ``params.rle_order``."""
    kw.pop("palette", None)
    return export_rle(mask, out, order=params.rle_order, **kw)


def rle_encode(binary: np.ndarray, order: str = "F") -> str:
    """Kaggle-style run-length encoding: ``'start length ...'``, 1-based starts.

    ``order='F'`` numbers pixels top to bottom, then left to right (column-major, the usual
    Kaggle convention); ``'C'`` numbers them row by row.
    """
    pixels = np.asarray(binary, bool).ravel(order=order)
    edges = np.flatnonzero(np.diff(np.concatenate(([0], pixels.view(np.uint8), [0])))) + 1
    edges[1::2] -= edges[::2]
    return " ".join(map(str, edges))


def rle_decode(rle: str, shape: tuple[int, int], order: str = "F") -> np.ndarray:
    """Inverse of :func:`rle_encode`: a ``bool`` array of ``shape``."""
    flat = np.zeros(int(shape[0]) * int(shape[1]), bool)
    nums = np.asarray(str(rle).split(), np.int64)
    if nums.size % 2:
        raise WsssError("an RLE string needs start/length pairs")
    for start, length in zip(nums[::2], nums[1::2], strict=True):
        if start < 1 or start - 1 + length > flat.size:
            raise WsssError(f"RLE run {start} {length} lies outside a {shape} image")
        flat[start - 1:start - 1 + length] = True
    return flat.reshape(shape, order=order)


def export_rle(masks: Any, out: str | os.PathLike, *, geometry: MaskGeometry | None,
               image_id: str | None = None, order: str = "F",
               class_names: Sequence[str] = LABEL_NAMES,
               record: RunRecord | None = None) -> Path:
    """Write an RLE CSV: one row per image and class (``image_id,class,rle,height,width``).

    Args:
        masks: one mask, or ``{image_id: mask}``.
        out: target ``.csv``.
        image_id: id of a single mask (default: the output file's stem).
        order: ``'F'`` (column-major, Kaggle) or ``'C'`` (row-major); see :func:`rle_encode`.
        class_names: one row per name, empty ``rle`` where the class is absent.
        record: provenance for ``<out>.run.json``.
        geometry: where the (first) mask lies on its slide; the CSV has no place for it, so
            it goes into ``<out>.run.json`` (``params.export.geometry``).
    """
    geometry = require_geometry(geometry)
    out = Path(out)
    if order not in ("F", "C"):
        raise WsssError(f"RLE order must be 'F' or 'C', not {order!r}")
    if not isinstance(masks, Mapping):
        masks = {image_id or out.name.split(".")[0]: masks}
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["image_id", "class", "rle", "height", "width"])
    first = None
    for iid, m in masks.items():
        m = np.asarray(as_mask(m), np.uint8)
        first = m if first is None else first
        for lab, name in enumerate(class_names):
            writer.writerow([iid, name, rle_encode(m == lab, order), *m.shape])
    with atomic_path(out) as tmp:
        tmp.write_text(buf.getvalue())
    return finish(out, record, export_info(FORMAT, first if first is not None
                                      else np.zeros((0, 0), np.uint8), geometry,
                                      class_names, order=order, images=len(masks)))


def read_rle_csv(path: str | os.PathLike, order: str = "F",
                 class_names: Sequence[str] = LABEL_NAMES) -> dict[str, np.ndarray]:
    """Decode an RLE CSV written by :func:`export_rle` to ``{image_id: labels}`` (255 = none)."""
    lookup = {n: i for i, n in enumerate(class_names)}
    masks: dict[str, np.ndarray] = {}
    try:
        with open(path, newline="") as fh:
            for row in csv.DictReader(fh):
                shape = (int(row["height"]), int(row["width"]))
                m = masks.setdefault(row["image_id"], np.full(shape, UNLABELLED, np.uint8))
                if row["class"] not in lookup:
                    raise WsssError(f"unknown class {row['class']!r} in '{path}'")
                m[rle_decode(row["rle"], shape, order)] = lookup[row["class"]]
    except (OSError, KeyError, ValueError) as err:
        raise WsssError(f"cannot read RLE CSV '{path}': {err}") from err
    return masks
