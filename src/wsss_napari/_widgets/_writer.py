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
from ..layer_record import LayerRecord, geometry_of
from ..params import ExportParams, ParamsBase, RunRecord


def run_record(metadata: dict) -> RunRecord:
    """Provenance of a mask layer from its metadata (model, parameters, slide)."""
    w = LayerRecord.find(metadata) or LayerRecord(kind="mask_file")
    slide = w.slide or metadata.get("slide")  # a slide layer's reader entry
    params = [p for p in (w.cam_params, w.postproc_params) if isinstance(p, ParamsBase)]
    extra = {"present": list(w.present)} if w.present is not None else {}
    seg = w.mask_from == "seg"  # the segmentation model made the mask, not the CAM model
    path, digest = (w.mask_model_path, w.mask_model_hash) if seg else (w.model_path,
                                                                      w.model_hash)
    rec = RunRecord.make(
        *params,
        model_name=Path(path).name if path else "",
        model_hash=digest or "", mask_from=w.mask_from or "",
        slide=str(getattr(slide, "path", None) or w.source or ""),
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
    geometry = geometry_of(metadata)
    if geometry is None:
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
