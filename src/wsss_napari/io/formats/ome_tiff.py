"""OME-TIFF: a tiled, pyramidal label image that QuPath, OMERO and napari open.

The OME ``Description`` holds the class names, colours, the mask's geometry and the run
record (:func:`read_exported_mask` reads them back).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ... import WsssError
from ...classes import LABEL_NAMES, PALETTE
from ...params import ExportFormat, ExportParams, RunRecord
from ...region import MaskGeometry
from ..atomic import atomic_path
from ..masks import DESC_KEY, UNLABELLED
from ._common import as_mask, colors, export_info, finish, require_geometry

FORMAT = ExportFormat.OME_TIFF
LABEL = "OME-TIFF"
SUFFIXES = (".ome.tif", ".ome.tiff", ".tif", ".tiff")
_BAND_BYTES = 16 * 2**20


def write(mask: Any, out: str | os.PathLike, params: ExportParams, **kw: Any) -> Path:
    """The registry's entry: :func:`export_ome_tiff` with ``params.tile``."""
    kw.pop("image_id", None)
    return export_ome_tiff(mask, out, tile=params.tile, **kw)


def export_ome_tiff(mask: Any, out: str | os.PathLike, *, geometry: MaskGeometry | None,
                    class_names: Sequence[str] = LABEL_NAMES,
                    palette: Sequence[Sequence[int]] = PALETTE, record: RunRecord | None = None,
                    tile: int = 512) -> Path:
    """Write a tiled, pyramidal (SubIFDs) OME-TIFF of a label mask, in bounded memory.

    Levels halve the size (nearest neighbour: labels are never blended) until the largest
    side fits in one tile; for a lazy source each level is built from the previous one
    (kept in a scratch zarr beside ``out``) and read in bands of <= 16 MiB. The OME
    metadata holds ``PhysicalSizeX/Y`` (the mask's pixel size:
    ``mpp * downsample`` micrometres), a ``MapAnnotation`` of label -> class name and colour,
    and a JSON ``Description`` (class names, colours, ``geometry``, run record) that
    :func:`read_exported_mask` reads back.

    Args:
        mask: ``uint8 (H, W)`` labels; a zarr array or other lazy array is read tile by tile.
        out: target file (``.ome.tif``).
        geometry: where the mask lies on its slide (an unknown ``mpp`` is not written).
        class_names: names of labels 0, 1, ...
        palette: RGB colour of each label.
        record: provenance; also written to ``<out>.run.json``.
        tile: tile edge in px.

    Returns:
        ``out`` as a Path.
    """
    import tifffile

    geometry = require_geometry(geometry)
    mask = as_mask(mask)
    out = Path(out)
    h, w = (int(s) for s in mask.shape)
    px_um = geometry.mpp * geometry.downsample if geometry.mpp else None
    metadata = _ome_metadata(out.name.split(".")[0], class_names,
                             colors(palette, len(class_names)), geometry, record, px_um)
    n_levels = 1
    while max(-(-h // 2 ** (n_levels - 1)), -(-w // 2 ** (n_levels - 1))) > tile:
        n_levels += 1
    bigtiff = h * w * 4 / 3 > 2**31
    in_memory = isinstance(mask, np.ndarray)
    with atomic_path(out) as tmp, (
        contextlib.nullcontext() if in_memory
        else tempfile.TemporaryDirectory(prefix=".pyramid-", dir=out.parent)
    ) as scratch:
        with tifffile.TiffWriter(tmp, bigtiff=bigtiff, ome=True) as tw:
            src = mask
            for level in range(n_levels):
                src = _write_level(tw, src, (h, w), level, n_levels, tile, px_um, metadata,
                                   None if in_memory else Path(scratch))
    return finish(out, record, export_info(FORMAT, mask, geometry, class_names,
                                      levels=n_levels, tile=tile))


def _ome_metadata(name: str, class_names: Sequence[str], class_colors: list, geometry:
                  MaskGeometry, record: RunRecord | None, px_um: float | None) -> dict[str, Any]:
    """tifffile's OME metadata of the mask: what QuPath / OMERO show (the label -> class map,
    the pixel size) and the JSON ``Description`` that :func:`read_exported_mask` reads back."""
    desc = {DESC_KEY: {
        "class_names": list(class_names), "class_colors": class_colors, "unlabelled": UNLABELLED,
        "geometry": geometry.to_dict(), "record": (record or RunRecord()).to_dict(),
    }}
    metadata: dict[str, Any] = {
        "axes": "YX", "Name": name, "Description": json.dumps(desc),
        "Channel": {"Name": "labels"},
        "MapAnnotation": {
            "Namespace": "wsss-napari/classes",
            "Value": {str(i): f"{n} #{r:02x}{g:02x}{b:02x}" for i, (n, (r, g, b))
                      in enumerate(zip(class_names, class_colors, strict=True))},
        },
    }
    if px_um:
        metadata.update(PhysicalSizeX=px_um, PhysicalSizeXUnit="µm",
                        PhysicalSizeY=px_um, PhysicalSizeYUnit="µm")
    return metadata


def _write_level(tw: Any, src: Any, size: tuple[int, int], level: int, n_levels: int,
                 tile: int, px_um: float | None, metadata: dict[str, Any],
                 scratch: Path | None) -> Any:
    """Write pyramid ``level`` of a ``size`` mask (level 0 holds the metadata and the SubIFDs)
    from the level above, ``src``; return this level's array, the next one's source (a lazy
    source's levels are kept in ``scratch``, so each is read once)."""
    f = 2**level
    shape = (-(-size[0] // f), -(-size[1] // f))
    kw: dict[str, Any] = {}
    if px_um:
        kw.update(resolution=(1e4 / (px_um * f), 1e4 / (px_um * f)),
                  resolutionunit="CENTIMETER")
    if level == 0:
        kw.update(subifds=n_levels - 1, metadata=metadata)
        tiles = _tiles(src, shape, tile, 1)
        dst = src
    else:
        kw.update(subfiletype=1, metadata=None)
        dst = None
        if scratch is None:
            dst = src[::2, ::2]
        elif level < n_levels - 1:  # lazy source: keep each level for the next
            import zarr

            dst = zarr.create_array(str(scratch / f"level{level}.zarr"),
                                    shape=shape, chunks=(tile, tile), dtype="uint8",
                                    fill_value=UNLABELLED)
        tiles = _tiles(src, shape, tile, 2, None if scratch is None else dst)
    tw.write(tiles, shape=shape, dtype=np.uint8, tile=(tile, tile),
             compression="zlib", photometric="minisblack", **kw)
    return dst


def _tiles(src: Any, shape: tuple[int, int], tile: int, f: int,
           keep: Any = None) -> Iterator[np.ndarray]:
    """Row-major, padded tiles of ``src[::f, ::f]`` (shape ``shape``).

    Pyramid levels are made from the previous level (nearest neighbour: labels never blend),
    so each source chunk is decoded once; ``keep`` stores the result for the next level.
    The source is read in bands of up to ``_BAND_BYTES`` (a zarr call costs milliseconds of
    overhead, a tile-sized read would be dominated by it).
    """
    group = max(1, _BAND_BYTES // (tile * f) ** 2)  # tiles per read
    for ty in range(0, shape[0], tile):
        for gx in range(0, shape[1], tile * group):
            gw = min(tile * group, shape[1] - gx)
            ys = slice(ty * f, min((ty + tile) * f, src.shape[0]))
            xs = slice(gx * f, min((gx + gw) * f, src.shape[1]))
            band = np.asarray(src[ys, xs], dtype=np.uint8)[::f, ::f]
            if keep is not None:
                keep[ty:ty + band.shape[0], gx:gx + band.shape[1]] = band
            for tx in range(0, band.shape[1], tile):
                block = band[:, tx:tx + tile]
                if block.shape != (tile, tile):
                    padded = np.full((tile, tile), UNLABELLED, np.uint8)
                    padded[: block.shape[0], : block.shape[1]] = block
                    block = padded
                yield np.ascontiguousarray(block)


def read_exported_mask(path: str | os.PathLike,
                       level: int = 0) -> tuple[np.ndarray, dict[str, Any]]:
    """Read an OME-TIFF written by :func:`export_ome_tiff` (or any label TIFF).

    Returns:
        ``(labels, meta)``: ``uint8`` labels of pyramid ``level`` and a dict with
        ``class_names``, ``class_colors``, ``geometry`` (a :class:`MaskGeometry` of level 0),
        ``pixel_size_um`` (this level's), ``levels`` (shapes) and ``record``; keys are
        missing where the file does not say. Files of older versions (an ``origin`` whose
        order was not recorded) have no ``geometry``.
    """
    import tifffile

    p = Path(path)
    try:
        with tifffile.TiffFile(p) as tf:
            series = tf.series[0]
            levels = series.levels
            if not 0 <= level < len(levels):
                raise WsssError(f"'{p}' has {len(levels)} pyramid level(s), not {level + 1}")
            labels = levels[level].asarray()
            meta: dict[str, Any] = {"levels": [tuple(lv.shape) for lv in levels]}
            ome = tf.ome_metadata
    except (OSError, tifffile.TiffFileError, ValueError, IndexError) as err:
        raise WsssError(f"cannot read the mask '{p}': {err}") from err
    if labels.ndim != 2:
        raise WsssError(f"'{p}' is not a label mask (shape {labels.shape})")
    if ome:
        meta.update(_parse_ome(ome))
    if "pixel_size_um" in meta and level:  # the OME pixel size is level 0's
        meta["pixel_size_um"] *= meta["levels"][0][1] / labels.shape[1]
    return labels.astype(np.uint8, copy=False), meta


def _parse_ome(xml: str) -> dict[str, Any]:
    import xml.etree.ElementTree as ET

    out: dict[str, Any] = {}
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return out
    for el in root.iter():
        tag = el.tag.rsplit("}", 1)[-1]
        if tag == "Pixels" and el.get("PhysicalSizeX"):
            out["pixel_size_um"] = float(el.get("PhysicalSizeX"))
        elif tag == "Description" and el.text and DESC_KEY in el.text:
            try:
                info = json.loads(el.text)[DESC_KEY]
            except (ValueError, KeyError, TypeError):
                continue
            out.update({k: info[k] for k in ("class_names", "class_colors", "record")
                        if k in info})
            if isinstance(info.get("geometry"), dict):
                out["geometry"] = MaskGeometry.from_dict(info["geometry"])
    return out
