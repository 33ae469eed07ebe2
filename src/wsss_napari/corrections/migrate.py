"""Migrating edit stores of older formats to the current one (:data:`.store.FORMAT_VERSION`)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from .. import WsssError
from .store import ENCODING, FORMAT, FORMAT_VERSION, UNEDITED


def upgrade_store(root: str | os.PathLike, drop_tumor: bool = False) -> int:
    """Migrate a format-1 edit store to the current format, in place.

    Format 1 cannot tell a tumor correction from a pixel napari's eraser set to ``0``; the
    values are kept as they are unless ``drop_tumor``, which forgets every tumor correction
    (repaint the real ones). Already current stores are left alone.

    Returns:
        The number of tumor pixels dropped.
    """
    import zarr

    root = Path(root)
    try:
        group = zarr.open_group(str(root), mode="r+")
    except Exception as err:  # noqa: BLE001 - not a zarr group of any kind
        raise WsssError(f"cannot open the edit store '{root}': {err}") from err
    if group.attrs.get("format") != FORMAT:
        raise WsssError(f"'{root}' is not a wsss-napari edit store")
    if int(group.attrs.get("format_version", 1)) >= FORMAT_VERSION:
        return 0
    dropped = 0
    if drop_tumor:
        labels = group["labels"]
        for ty, tx in zip(*np.nonzero(np.asarray(group["tile_mtime"][...])), strict=True):
            t = labels.chunks[0]
            sl = (slice(int(ty) * t, (int(ty) + 1) * t), slice(int(tx) * t, (int(tx) + 1) * t))
            block = np.asarray(labels[sl])
            tumor = block == 0
            if tumor.any():
                dropped += int(tumor.sum())
                labels[sl] = np.where(tumor, UNEDITED, block).astype(np.uint8)
    group.attrs.update({"format_version": FORMAT_VERSION, "encoding": ENCODING,
                        "upgraded_from": 1, "upgraded": time.time()})
    return dropped
