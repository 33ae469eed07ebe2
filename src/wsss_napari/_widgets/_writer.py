"""npe2 writer: a Labels layer -> OME-TIFF / PNG / GeoJSON / RLE CSV via ``io.export``.

Shared with the export widget: :func:`export_kwargs` turns a layer's metadata (the widgets'
provenance dict) into the geometry and :class:`~wsss_napari.params.RunRecord` that the core
writers embed, so a file saved with File > Save Layers carries the same record.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import WsssError
from ..labels_encoding import core_labels
from ..params import ExportParams, ParamsBase, RunRecord
from ..region import MaskGeometry


def run_record(metadata: dict) -> RunRecord:
    """Provenance of a mask layer from its metadata (model, parameters, slide)."""
    w = metadata.get("wsss", {}) if isinstance(metadata.get("wsss"), dict) else {}
    slide = w.get("slide") or metadata.get("slide")
    params = [p for p in (w.get("cam_params"), w.get("postproc_params"))
              if isinstance(p, ParamsBase)]
    extra = {"present": list(w["present"])} if "present" in w else {}
    rec = RunRecord.make(
        *params,
        model_name=Path(w["model_path"]).name if w.get("model_path") else "",
        model_hash=w.get("model_hash", ""),
        slide=str(getattr(slide, "path", None) or w.get("source", "")),
        slide_mpp=getattr(slide, "mpp", None),
    )
    if extra:
        rec = RunRecord.from_dict({**rec.to_dict(), "params": {**rec.params, "postproc_extra":
                                                               extra}})
    return rec


def export_kwargs(metadata: dict, name: str) -> dict[str, Any]:
    """Geometry + provenance keyword arguments of ``io.export.export_mask`` for a layer.

    The geometry is the layer's ``metadata['wsss']['geometry']`` (set by the widgets) or
    ``metadata['geometry']`` (a :class:`~wsss_napari.region.MaskGeometry` or its dict, for
    layers made elsewhere); a layer without one is refused (a mask is never exported at a
    guessed place).
    """
    w = metadata.get("wsss", {}) if isinstance(metadata.get("wsss"), dict) else {}
    geometry = w.get("geometry", metadata.get("geometry"))
    if isinstance(geometry, dict):
        geometry = MaskGeometry.from_dict(geometry)
    if not isinstance(geometry, MaskGeometry):
        raise WsssError(f"layer '{name}' does not say where it lies on the slide (no "
                        "geometry in its metadata): export the maps' pseudo-mask, or set "
                        "layer.metadata['geometry'] to a MaskGeometry")
    return {"geometry": geometry, "record": run_record(metadata), "image_id": name}


def write_labels(path: str, data: Any, meta: dict) -> list[str]:
    """npe2 single-layer writer: the format follows the file name's ending."""
    from ..io.export import export_mask, format_for_path

    params = ExportParams(format=format_for_path(path))
    metadata = meta.get("metadata", {}) or {}
    mask = core_labels(data[0] if isinstance(data, list) else data, metadata)
    out = export_mask(mask, path, params, **export_kwargs(metadata,
                                                          meta.get("name", Path(path).stem)))
    return [str(out)]
