"""Export corrected masks: pyramidal OME-TIFF, palette PNG, QuPath GeoJSON and RLE CSV.

:func:`export_mask` writes a mask in the format its parameters name, through the registry
of :mod:`wsss_napari.io.formats` (one module per format); the format modules' functions are
re-exported here.

Every writer takes a label mask (``uint8 (H, W)``: 0 tumor, 1 stroma, 2 normal,
3 background, 255 unlabelled) as a numpy array or any lazily sliceable array (a zarr array,
:meth:`~wsss_napari.corrections.store.EditStore.merged_view`), writes the file atomically
(:mod:`wsss_napari.io.atomic`) and writes ``<out>.run.json`` beside it: the
:class:`~wsss_napari.params.RunRecord` that made the mask plus the export settings. A failure
(unwritable folder, full disk, a source that cannot be read) raises
:class:`~wsss_napari.WsssError` and leaves neither file behind.

Geometry: every writer takes the mask's :class:`~wsss_napari.region.MaskGeometry` (level-0
origin ``y``/``x``, ``downsample``, ``mpp``, ``slide``) and writes it where the next command
reads it back (:func:`open_mask_source`): the OME ``Description`` JSON, a PNG text chunk
(``wsss_napari``), the GeoJSON's top-level ``wsss_napari`` member, and for every format the
sidecar's ``params.export.geometry``. Mask pixel ``(row, col)`` covers level-0 pixels
``[x + col * downsample, x + (col + 1) * downsample)`` (same for y / row). GeoJSON
coordinates are level-0 pixel *corners* in this frame (as QuPath uses them); its polygons are
valid under the OGC rules (:mod:`wsss_napari.io.polygons`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..classes import LABEL_NAMES, PALETTE
from ..params import ExportParams, RunRecord
from ..region import MaskGeometry
from .formats import FORMATS, format_for_path
from .formats._common import require_geometry, sidecar_path
from .formats.geojson import export_geojson, geojson_to_mask, mask_to_geojson
from .formats.ome_tiff import export_ome_tiff, read_exported_mask
from .formats.png import export_png
from .formats.rle import export_rle, read_rle_csv, rle_decode, rle_encode
from .masks import UNLABELLED, check_label_values, read_png_meta, write_label_png

__all__ = [
    "UNLABELLED", "check_label_values", "export_geojson", "export_mask", "export_ome_tiff",
    "export_png", "export_rle", "format_for_path", "geojson_to_mask", "mask_to_geojson",
    "read_exported_mask", "read_png_meta", "read_rle_csv", "rle_decode", "rle_encode",
    "sidecar_path", "write_label_png",
]


def export_mask(mask: Any, out: str | os.PathLike, params: ExportParams | None = None, *,
                geometry: MaskGeometry | None, record: RunRecord | None = None,
                image_id: str | None = None, class_names: Sequence[str] = LABEL_NAMES,
                palette: Sequence[Sequence[int]] = PALETTE) -> Path:
    """Export ``mask`` in ``params.format`` (the CLI, the Export widget and File > Save call
    this).

    ``params`` is also recorded in ``<out>.run.json``; ``geometry`` (where the mask lies on
    its slide) is required: a mask is never exported at a guessed place.
    """
    geometry = require_geometry(geometry)
    params = params or ExportParams()
    rec = record or RunRecord()
    rec = RunRecord.from_dict({**rec.to_dict(),
                               "params": {**rec.params, "export_params": params.to_dict()}})
    return FORMATS[params.format].write(mask, out, params, geometry=geometry, record=rec,
                                        class_names=class_names, palette=palette,
                                        image_id=image_id)
