"""Export corrected masks: pyramidal OME-TIFF, palette PNG, QuPath GeoJSON and RLE CSV.

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

import contextlib
import csv
import io
import json
import os
import tempfile
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import WsssError
from ..classes import BACKGROUND, LABEL_NAMES, PALETTE
from ..params import ExportFormat, ExportParams, GeoJsonGroup, RunRecord
from ..region import MaskGeometry
from .atomic import atomic_path, atomic_write_text

UNLABELLED = 255
#: File-name endings of each format (the first is the default).
SUFFIXES: dict[ExportFormat, tuple[str, ...]] = {
    ExportFormat.OME_TIFF: (".ome.tif", ".ome.tiff", ".tif", ".tiff"),
    ExportFormat.PNG: (".png",),
    ExportFormat.GEOJSON: (".geojson", ".json"),
    ExportFormat.RLE: (".csv",),
}
_MAX_PNG_PIXELS = 100_000_000
_BAND_BYTES = 16 * 2**20
_DESC_KEY = "wsss_napari"


# ------------------------------------------------------------------------------ helpers
def format_for_path(path: str | os.PathLike) -> ExportFormat:
    """The export format a file name asks for (``WsssError`` if none matches)."""
    name = Path(path).name.lower()
    for fmt, sfxs in SUFFIXES.items():
        if name.endswith(sfxs):
            return fmt
    known = ", ".join(s for sfxs in SUFFIXES.values() for s in sfxs)
    raise WsssError(f"cannot tell the export format from '{Path(path).name}': use one of "
                    f"{known} or pass the format explicitly")


def sidecar_path(out: str | os.PathLike) -> Path:
    """``<out>.run.json``: where the provenance of an export is written."""
    return Path(f"{out}.run.json")


def _as_mask(mask: Any) -> Any:
    if not hasattr(mask, "shape") or len(mask.shape) != 2:
        raise WsssError(f"a mask must be a 2-D label array, got shape "
                        f"{getattr(mask, 'shape', None)}")
    if np.dtype(getattr(mask, "dtype", np.uint8)) != np.uint8:
        mask = np.asarray(mask)
        if mask.size and (mask.min() < 0 or mask.max() > 255):
            raise WsssError("mask values must be labels in 0..255")
        mask = mask.astype(np.uint8)
    return mask


def _colors(palette: Sequence[Sequence[int]], n: int) -> list[list[int]]:
    return [list(map(int, palette[i])) if i < len(palette) else [128, 128, 128] for i in range(n)]


def _finish(out: Path, record: RunRecord | None, info: dict[str, Any]) -> Path:
    """Write the sidecar; if that fails, remove ``out`` too (no export without provenance)."""
    rec = record or RunRecord()
    data = rec.to_dict()
    data["params"] = {**data.get("params", {}), "export": info}
    try:
        atomic_write_text(sidecar_path(out), json.dumps(data, indent=2, sort_keys=True))
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    return out


def _geometry(geometry: MaskGeometry | None) -> MaskGeometry:
    if geometry is None:
        raise WsssError("the mask's geometry (where it lies on the slide: origin, downsample) "
                        "is unknown; state it (CLI: --downsample D --region-origin Y X, or "
                        "--assume-level0)")
    if not isinstance(geometry, MaskGeometry):
        raise WsssError(f"geometry must be a MaskGeometry, not {type(geometry).__name__}")
    return geometry


def _info(fmt: ExportFormat, mask: Any, geometry: MaskGeometry, class_names: Sequence[str],
          **extra: Any) -> dict[str, Any]:
    return {"format": fmt.value, "mask_shape": [int(s) for s in mask.shape],
            "geometry": geometry.to_dict(), "class_names": list(class_names), **extra}


# ------------------------------------------------------------------------------ OME-TIFF
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

    geometry = _geometry(geometry)
    mask = _as_mask(mask)
    out = Path(out)
    h, w = (int(s) for s in mask.shape)
    colors = _colors(palette, len(class_names))
    desc = {_DESC_KEY: {
        "class_names": list(class_names), "class_colors": colors, "unlabelled": UNLABELLED,
        "geometry": geometry.to_dict(), "record": (record or RunRecord()).to_dict(),
    }}
    metadata: dict[str, Any] = {
        "axes": "YX", "Name": out.name.split(".")[0], "Description": json.dumps(desc),
        "Channel": {"Name": "labels"},
        "MapAnnotation": {
            "Namespace": "wsss-napari/classes",
            "Value": {str(i): f"{n} #{r:02x}{g:02x}{b:02x}"
                      for i, (n, (r, g, b)) in enumerate(zip(class_names, colors, strict=True))},
        },
    }
    px_um = geometry.mpp * geometry.downsample if geometry.mpp else None
    if px_um:
        metadata.update(PhysicalSizeX=px_um, PhysicalSizeXUnit="µm",
                        PhysicalSizeY=px_um, PhysicalSizeYUnit="µm")
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
                f = 2**level
                shape = (-(-h // f), -(-w // f))
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
                    if in_memory:
                        dst = src[::2, ::2]
                    elif level < n_levels - 1:  # lazy source: keep each level for the next
                        import zarr

                        dst = zarr.create_array(str(Path(scratch) / f"level{level}.zarr"),
                                                shape=shape, chunks=(tile, tile), dtype="uint8",
                                                fill_value=UNLABELLED)
                    tiles = _tiles(src, shape, tile, 2, None if in_memory else dst)
                tw.write(tiles, shape=shape, dtype=np.uint8, tile=(tile, tile),
                         compression="zlib", photometric="minisblack", **kw)
                src = dst
    return _finish(out, record, _info(ExportFormat.OME_TIFF, mask, geometry, class_names,
                                      levels=n_levels, tile=tile))


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
        elif tag == "Description" and el.text and _DESC_KEY in el.text:
            try:
                info = json.loads(el.text)[_DESC_KEY]
            except (ValueError, KeyError, TypeError):
                continue
            out.update({k: info[k] for k in ("class_names", "class_colors", "record")
                        if k in info})
            if isinstance(info.get("geometry"), dict):
                out["geometry"] = MaskGeometry.from_dict(info["geometry"])
    return out


# ------------------------------------------------------------------------------ PNG
def write_label_png(mask: Any, out: str | os.PathLike, geometry: MaskGeometry | None = None,
                    palette: Sequence[Sequence[int]] = PALETTE,
                    class_names: Sequence[str] | None = None) -> Path:
    """Atomic palette PNG of labels with its geometry in a ``wsss_napari`` text chunk.

    Every PNG mask of the project (``predict``, ``pseudo``, exports) goes through this, so
    :func:`open_mask_source` knows where any of them lies.
    """
    from PIL import Image, PngImagePlugin

    mask = _as_mask(mask)
    if mask.shape[0] * mask.shape[1] > _MAX_PNG_PIXELS:
        raise WsssError(f"a {mask.shape[1]}x{mask.shape[0]} mask is too large for PNG; "
                        "export it as ome-tiff (tiled, pyramidal)")
    img = Image.fromarray(np.ascontiguousarray(np.asarray(mask, np.uint8)), mode="P")
    flat = [c for rgb in palette for c in map(int, rgb)]
    img.putpalette(flat[:768] + [0] * (768 - len(flat[:768])))
    info = PngImagePlugin.PngInfo()
    chunk: dict[str, Any] = {}
    if geometry is not None:
        chunk["geometry"] = geometry.to_dict()
    if class_names is not None:
        chunk["class_names"] = list(class_names)
    if chunk:
        info.add_itxt(_DESC_KEY, json.dumps(chunk))
    out = Path(out)
    with atomic_path(out) as tmp:
        img.save(tmp, format="PNG", optimize=False, pnginfo=info)
    return out


def read_png_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The ``wsss_napari`` text chunk of a PNG (``geometry`` as a :class:`MaskGeometry`)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            text = (getattr(im, "text", None) or {}).get(_DESC_KEY)
    except OSError:
        return {}
    try:
        meta = json.loads(text) if text else {}
    except ValueError:
        return {}
    if isinstance(meta.get("geometry"), dict):
        meta["geometry"] = MaskGeometry.from_dict(meta["geometry"])
    return meta if isinstance(meta, dict) else {}


def export_png(mask: Any, out: str | os.PathLike, *, geometry: MaskGeometry | None,
               palette: Sequence[Sequence[int]] = PALETTE, record: RunRecord | None = None,
               class_names: Sequence[str] = LABEL_NAMES) -> Path:
    """Write a palette PNG (WSSS4LUAD colours; pixel values are the labels) that carries its
    geometry in a text chunk (:func:`write_label_png`)."""
    geometry = _geometry(geometry)
    mask = _as_mask(mask)
    out = write_label_png(mask, out, geometry, palette, class_names)
    return _finish(out, record, _info(ExportFormat.PNG, mask, geometry, class_names))


# ------------------------------------------------------------------------------ GeoJSON
def mask_to_geojson(mask: Any, *, geometry: MaskGeometry, simplify: float = 1.0,
                    group: GeoJsonGroup | str = GeoJsonGroup.REGION,
                    labels: Sequence[int] | None = None,
                    class_names: Sequence[str] = LABEL_NAMES,
                    palette: Sequence[Sequence[int]] = PALETTE) -> dict[str, Any]:
    """A GeoJSON FeatureCollection of the mask's regions, as QuPath imports annotations.

    Each 4-connected region of a label is one polygon whose edges are the pixels' edges
    (:mod:`.polygons`: valid under the OGC rules, holes as holes, corner-touching pixels
    resolved), simplified with shapely's topology-preserving Douglas-Peucker (``simplify``
    mask px; 0 keeps every corner, so a polygon's area is its pixel count). Coordinates are
    level-0 pixels: ``(geometry.x + col * downsample, geometry.y + row * downsample)``.

    Args:
        mask: ``uint8 (H, W)`` labels (read whole).
        geometry: where the mask lies on its slide.
        simplify: tolerance in mask px.
        group: ``'region'`` (one Polygon feature per connected region) or ``'class'`` (one
            MultiPolygon feature per class).
        labels: labels to write; default every label present except 255 and background.
        class_names: names of labels 0, 1, ... (capitalised for QuPath: ``Tumor``).
        palette: RGB colour per label (``classification.color``).
    """
    from .polygons import region_polygons, rings_of, simplified

    mask = np.asarray(_as_mask(mask), np.uint8)
    group = GeoJsonGroup(group)
    if labels is None:
        labels = [int(v) for v in np.unique(mask) if v != UNLABELLED and v != BACKGROUND]
    colors = _colors(palette, max(len(class_names), max(labels, default=0) + 1))
    ox, oy, ds = float(geometry.x), float(geometry.y), float(geometry.downsample)

    def coords(rings: list[np.ndarray]) -> list[list[list[float]]]:
        out = []
        for xy in rings:
            x, y = ox + xy[:, 0] * ds, oy + xy[:, 1] * ds
            out.append([[round(float(a), 3), round(float(b), 3)] for a, b in zip(x, y,
                                                                               strict=True)])
        return out

    features = []
    for lab in labels:
        polys = region_polygons(mask == lab)
        if not polys:
            continue
        geoms = simplified(polys, float(simplify), as_multi=group is GeoJsonGroup.CLASS)
        name = class_names[lab].capitalize() if lab < len(class_names) else f"Label {lab}"
        props = {"objectType": "annotation", "name": name,
                 "classification": {"name": name, "color": colors[lab]}, "label": int(lab)}
        for g in geoms:
            parts = [coords(rings) for rings in rings_of(g)]
            geo = {"type": "MultiPolygon", "coordinates": parts} \
                if group is GeoJsonGroup.CLASS else {"type": "Polygon", "coordinates": parts[0]}
            features.append({"type": "Feature", "id": str(uuid.uuid4()), "geometry": geo,
                             "properties": dict(props)})
    return {"type": "FeatureCollection", "features": features}


def export_geojson(mask: Any, out: str | os.PathLike, *, geometry: MaskGeometry | None,
                   simplify: float = 1.0, group: GeoJsonGroup | str = GeoJsonGroup.REGION,
                   include_background: bool = False, class_names: Sequence[str] = LABEL_NAMES,
                   palette: Sequence[Sequence[int]] = PALETTE,
                   record: RunRecord | None = None) -> Path:
    """Write :func:`mask_to_geojson` to ``out`` (QuPath: File > Import objects).

    The collection also carries a ``wsss_napari`` member (``geometry``, class names, run
    record), which QuPath ignores.
    """
    geometry = _geometry(geometry)
    mask = np.asarray(_as_mask(mask), np.uint8)
    labels = [int(v) for v in np.unique(mask)
              if v != UNLABELLED and (include_background or v != BACKGROUND)]
    fc = mask_to_geojson(mask, geometry=geometry, simplify=simplify, group=group,
                         labels=labels, class_names=class_names, palette=palette)
    info = _info(ExportFormat.GEOJSON, mask, geometry, class_names, simplify=simplify,
                 group=GeoJsonGroup(group).value)
    fc[_DESC_KEY] = {**info, "record": (record or RunRecord()).to_dict()}
    out = Path(out)
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(fc))
    return _finish(out, record, info)


def geojson_to_mask(geojson: str | os.PathLike | Mapping[str, Any], shape: tuple[int, int], *,
                    geometry: MaskGeometry, class_names: Sequence[str] = LABEL_NAMES) -> np.ndarray:
    """Rasterise GeoJSON annotations back to a label mask (pixel-centre inclusion).

    ``shape`` and ``geometry`` give the grid to rasterise on (level-0 coordinates of the
    GeoJSON are mapped through ``geometry``). Features are matched to labels by
    ``classification.name`` (case-insensitive); unknown classes are skipped. Pixels no
    polygon covers are 255.
    """
    from skimage.draw import polygon as fill_polygon

    if not isinstance(geojson, Mapping):
        try:
            geojson = json.loads(Path(geojson).read_text())
        except (OSError, ValueError) as err:
            raise WsssError(f"cannot read GeoJSON '{geojson}': {err}") from err
    lookup = {n.lower(): i for i, n in enumerate(class_names)}
    out = np.full(shape, UNLABELLED, np.uint8)
    feats = geojson.get("features", []) if geojson.get("type") == "FeatureCollection" else [geojson]
    for feat in feats:
        cls = ((feat.get("properties") or {}).get("classification") or {}).get("name", "")
        lab = lookup.get(str(cls).lower())
        geom = feat.get("geometry") or {}
        if lab is None or geom.get("type") not in ("Polygon", "MultiPolygon"):
            continue
        polys = [geom["coordinates"]] if geom["type"] == "Polygon" else geom["coordinates"]
        for rings in polys:
            region = np.zeros(shape, bool)
            for k, ring in enumerate(rings):
                a = np.asarray(ring, np.float64)
                # level-0 corner -> map corner -> pixel-centre index
                rows, cols = geometry.from_level0(a[:, 1], a[:, 0])
                rows, cols = rows - 0.5, cols - 0.5
                rr, cc = fill_polygon(rows, cols, shape)
                region[rr, cc] = k == 0  # the exterior ring fills, holes cut out
            out[region] = lab
    return out


# ------------------------------------------------------------------------------ RLE
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
    geometry = _geometry(geometry)
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
        m = np.asarray(_as_mask(m), np.uint8)
        first = m if first is None else first
        for lab, name in enumerate(class_names):
            writer.writerow([iid, name, rle_encode(m == lab, order), *m.shape])
    with atomic_path(out) as tmp:
        tmp.write_text(buf.getvalue())
    return _finish(out, record, _info(ExportFormat.RLE, first if first is not None
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


# ------------------------------------------------------------------------------ dispatch
def export_mask(mask: Any, out: str | os.PathLike, params: ExportParams | None = None, *,
                geometry: MaskGeometry | None, record: RunRecord | None = None,
                image_id: str | None = None, class_names: Sequence[str] = LABEL_NAMES,
                palette: Sequence[Sequence[int]] = PALETTE) -> Path:
    """Export ``mask`` in ``params.format`` (the CLI and the napari writer call this).

    ``params`` is also recorded in ``<out>.run.json``; ``geometry`` (where the mask lies on
    its slide) is required: a mask is never exported at a guessed place.
    """
    geometry = _geometry(geometry)
    params = params or ExportParams()
    rec = record or RunRecord()
    rec = RunRecord.from_dict({**rec.to_dict(),
                               "params": {**rec.params, "export_params": params.to_dict()}})
    geo = {"geometry": geometry, "class_names": class_names}
    fmt = params.format
    if fmt is ExportFormat.OME_TIFF:
        return export_ome_tiff(mask, out, palette=palette, record=rec, tile=params.tile, **geo)
    if fmt is ExportFormat.PNG:
        return export_png(mask, out, palette=palette, record=rec, **geo)
    if fmt is ExportFormat.GEOJSON:
        return export_geojson(mask, out, simplify=params.simplify, group=params.geojson_group,
                              include_background=params.geojson_background, palette=palette,
                              record=rec, **geo)
    return export_rle(mask, out, image_id=image_id, order=params.rle_order, record=rec, **geo)


# ------------------------------------------------------------------------------ sources
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
        labels, out = _read_image_mask(p), read_png_meta(p)
    else:
        labels, out = _read_image_mask(p), {}
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


#: Largest share of an RGB mask's pixels whose colour may be outside the palette.
MAX_OFF_PALETTE = 0.01


def _read_image_mask(p: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(p) as im:
            mode = im.mode
            if mode in ("LA", "La", "PA"):
                raise WsssError(f"'{p}' has 2 channels ({mode}: a value and an alpha); a mask "
                                "must be one channel of labels (palette or grey PNG)")
            a = np.asarray(im.convert("RGB") if mode not in ("P", "L", "I;16", "I") else im)
    except (OSError, UnidentifiedImageError) as err:
        raise WsssError(f"cannot read the mask '{p}': {err}") from err
    if a.ndim == 3:  # RGB: map the palette's colours back to labels
        labels = np.full(a.shape[:2], UNLABELLED, np.uint8)
        for i, rgb in enumerate(PALETTE):
            labels[(a == np.asarray(rgb, np.uint8)).all(axis=2)] = i
        off = float(np.mean(labels == UNLABELLED)) if labels.size else 0.0
        if off > MAX_OFF_PALETTE:
            raise WsssError(f"'{p}' is not a label mask: {off:.0%} of its pixels have colours "
                            "outside the WSSS4LUAD palette (an RGB photo?); give a palette or "
                            "grey PNG of labels 0..3")
        return labels
    check_label_values(a, p)
    return a.astype(np.uint8)


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


def _open_zarr_mask(p: Path, base: str | os.PathLike | None) -> tuple[Any, dict[str, Any]]:
    import zarr

    from ..corrections.store import FORMAT, EditStore

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
