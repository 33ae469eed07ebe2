"""Where an export's mask comes from: a mask file, a mask zarr, or the corrections of an
edit store over the mask they correct.

This sits above :mod:`wsss_napari.io` (which never imports ``corrections``): the file
readers are :func:`wsss_napari.io.masks.read_mask` and
:func:`wsss_napari.io.formats.ome_tiff.read_exported_mask`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .. import WsssError
from ..classes import PALETTE
from ..io.formats._common import sidecar_path
from ..io.formats.ome_tiff import read_exported_mask
from ..io.masks import check_label_values, read_mask, read_png_meta
from ..region import MaskGeometry
from .store import FORMAT, EditStore


def open_mask_source(path: str | os.PathLike,
                     base: str | os.PathLike | None = None) -> tuple[Any, dict[str, Any]]:
    """Open a mask to export: a PNG/TIFF mask, an edit store or a mask zarr.

    Args:
        path: a label PNG (palette, grey, or RGB in the WSSS4LUAD colours), a TIFF (e.g. a
            previous OME-TIFF export), an ``edits.zarr`` edit store, or a zarr array (or a
            group holding ``labels`` / ``mask``).
        base: for an edit store, the mask the edits correct (any of the above); without it
            only the edited pixels are exported (255 elsewhere).

    Returns:
        ``(mask, meta)``: a 2-D uint8 array-like (lazy for zarr) and what the source knows:
        ``geometry`` (a :class:`MaskGeometry`, or ``None`` when the source does not say
        where it lies) and ``class_names``.
    """
    p = Path(path)
    if not p.exists():
        raise WsssError(f"mask not found: '{p}'")
    if p.is_dir():
        return _open_zarr_mask(p, base)
    name = p.name.lower()
    if name.endswith((".tif", ".tiff")):
        labels, meta = read_exported_mask(p)
        check_label_values(labels, p, max(len(meta.get("class_names") or ()), len(PALETTE)))
        out = {k: meta[k] for k in ("geometry", "class_names") if meta.get(k) is not None}
    elif name.endswith(".png"):
        labels, out = read_mask(p), read_png_meta(p)
    else:
        labels, out = read_mask(p), {}
    if out.get("geometry") is None:
        out["geometry"] = _sidecar_geometry(p)
    return labels, out


def _sidecar_geometry(p: Path) -> MaskGeometry | None:
    """The geometry an export recorded in ``<file>.run.json`` (``None`` if none)."""
    side = sidecar_path(p)
    if not side.is_file():
        return None
    try:
        geo = json.loads(side.read_text())["params"]["export"]["geometry"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return MaskGeometry.from_dict(geo) if isinstance(geo, dict) else None


def _open_zarr_mask(p: Path, base: str | os.PathLike | None) -> tuple[Any, dict[str, Any]]:
    import zarr

    try:
        node = zarr.open(str(p), mode="r")
    except Exception as err:  # noqa: BLE001 - any zarr failure means "not a mask zarr"
        raise WsssError(f"'{p}' is a folder but not a zarr mask or edit store "
                        "(no zarr metadata inside)") from err
    if isinstance(node, zarr.Group) and node.attrs.get("format") == FORMAT:
        store = EditStore.open(p, read_only=True)
        meta = {"geometry": store.geometry, "class_names": list(store.class_names)}
        if base is None:
            return store.labels, meta
        base_mask, _ = open_mask_source(base)
        return store.merged_view(base_mask), meta
    if isinstance(node, zarr.Group):
        for key in ("labels", "mask", "0"):
            if key in node:
                node = node[key]
                break
        else:
            raise WsssError(f"the zarr group '{p}' holds no 'labels' or 'mask' array")
    if len(node.shape) != 2:
        raise WsssError(f"'{p}' is not a 2-D label array (shape {node.shape})")
    geo = node.attrs.get("geometry")
    meta: dict[str, Any] = {
        "geometry": MaskGeometry.from_dict(geo) if isinstance(geo, dict) else None}
    if "class_names" in node.attrs:
        meta["class_names"] = node.attrs["class_names"]
    return node, meta
