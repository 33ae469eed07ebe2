"""QuPath GeoJSON: one valid OGC polygon per region (or multipolygon per class), level-0
pixel corners as coordinates."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ... import WsssError
from ...classes import BACKGROUND, LABEL_NAMES, PALETTE
from ...params import ExportFormat, ExportParams, GeoJsonGroup, RunRecord
from ...region import MaskGeometry
from ..atomic import atomic_path
from ..masks import DESC_KEY, UNLABELLED
from ._common import as_mask, colors, export_info, finish, require_geometry

FORMAT = ExportFormat.GEOJSON
LABEL = "GeoJSON"
SUFFIXES = (".geojson", ".json")


def write(mask: Any, out: str | os.PathLike, params: ExportParams, **kw: Any) -> Path:
    """The registry's entry: :func:`export_geojson` with the GeoJSON settings of ``params``."""
    kw.pop("image_id", None)
    return export_geojson(mask, out, simplify=params.simplify, group=params.geojson_group,
                          include_background=params.geojson_background, **kw)


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
    from ..polygons import region_polygons, rings_of, simplified

    mask = np.asarray(as_mask(mask), np.uint8)
    group = GeoJsonGroup(group)
    if labels is None:
        labels = [int(v) for v in np.unique(mask) if v != UNLABELLED and v != BACKGROUND]
    label_colors = colors(palette, max(len(class_names), max(labels, default=0) + 1))
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
                 "classification": {"name": name, "color": label_colors[lab]}, "label": int(lab)}
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
    geometry = require_geometry(geometry)
    mask = np.asarray(as_mask(mask), np.uint8)
    labels = [int(v) for v in np.unique(mask)
              if v != UNLABELLED and (include_background or v != BACKGROUND)]
    fc = mask_to_geojson(mask, geometry=geometry, simplify=simplify, group=group,
                         labels=labels, class_names=class_names, palette=palette)
    info = export_info(FORMAT, mask, geometry, class_names, simplify=simplify,
                 group=GeoJsonGroup(group).value)
    fc[DESC_KEY] = {**info, "record": (record or RunRecord()).to_dict()}
    out = Path(out)
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(fc))
    return finish(out, record, info)


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
