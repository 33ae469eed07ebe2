"""The tuning widget's layer work: the pseudo-mask layer (with the stored edits painted
over it), the ground-truth picker and resampling, and the fit job (no Qt widgets here)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import WsssError
from ..labels_encoding import core_labels, to_layer
from ..layer_record import LayerRecord
from ..params import PostprocParams
from ._layers import labels_colormap, placement, record_of, region_rgb


def is_ground_truth(layer: Any) -> bool:
    """A Labels layer that may be a reference map: not the plugin's own pseudo-mask,
    Correction or queue brush (a ground truth, an opened mask file, a foreign layer)."""
    from napari.layers import Labels

    rec = record_of(layer)
    return isinstance(layer, Labels) and (rec is None or rec.kind in ("ground_truth",
                                                                      "mask_file"))


def show_mask(viewer: Any, name: str, mask: np.ndarray, rec: LayerRecord, cams: Any,
              slide_layer: Any | None) -> None:
    """Show ``mask`` (core labels at the maps' size) as the Labels layer ``name`` with record
    ``rec``: in place when the layer shows the same maps, else as a new layer over the slide.
    Edits stored for these maps are painted over it (the pathologist's edits win)."""
    layer = viewer.layers[name] if name in viewer.layers else None
    old = record_of(layer) if layer is not None else None
    same_cams = old is not None and old.slide_cams_id == rec.slide_cams_id
    if same_cams and old.edit_store is not None:
        rec = rec.replace(edit_store=old.edit_store)
        mask = with_edits(mask, old.edit_store, cams)
    mask = to_layer(mask)  # class + 1, 0 = nothing: what napari's tools expect
    if layer is not None and same_cams and layer.data.shape == mask.shape:
        np.copyto(layer.data, mask)
        rec.store(layer)
        layer.refresh()
        return
    if layer is not None:
        viewer.layers.remove(layer)
    where = placement(slide_layer, cams.geometry) if slide_layer else {}
    viewer.add_labels(mask, name=name, opacity=0.5, colormap=labels_colormap(),
                      metadata=rec.to_metadata(), **where)


def with_edits(mask: np.ndarray, store: Any, cams: Any) -> np.ndarray:
    """``mask`` with the stored corrections painted over it."""
    oy, ox = (int(round(v)) for v in store.geometry.from_level0(cams.geometry.y,
                                                                 cams.geometry.x))
    edits = store.read(oy, ox, *mask.shape)
    return np.where(edits != 255, edits, mask).astype(np.uint8)


def make_tuner(meta: LayerRecord):
    """A LiveTuner over the cached maps (and the slide's pixels there, for glass detection)."""
    from ..inference.slide_mask import cams_tuner

    return cams_tuner(meta.slide_cams, meta.slide)


def _region_rgb(meta: LayerRecord) -> np.ndarray | None:
    """RGB under the maps for glass detection (None when the slide is unknown or huge)."""
    from ..inference.slide_mask import MAX_GLASS_PIXELS

    slide, cams = meta.slide, meta.slide_cams
    shape = tuple(cams.cams.shape[-2:])
    if slide is None or shape[0] * shape[1] > MAX_GLASS_PIXELS:
        return None
    return region_rgb(slide, cams.geometry, shape)


def resample_to_cams(gt_layer: Any, slide_layer: Any, cams: Any) -> np.ndarray:
    """Ground truth sampled (nearest) at the centres of the maps' pixels, via world coords."""
    h, w = cams.cams.shape[-2:]
    if slide_layer is None:
        raise WsssError("the slide layer of these maps is no longer open")
    where = placement(slide_layer, cams.geometry)
    ys = where["translate"][0] + np.arange(h) * where["scale"][0]
    xs = where["translate"][1] + np.arange(w) * where["scale"][1]
    gt_y = np.round((ys - gt_layer.translate[-2]) / gt_layer.scale[-2]).astype(int)
    gt_x = np.round((xs - gt_layer.translate[-1]) / gt_layer.scale[-1]).astype(int)
    data = core_labels(gt_layer.data[0] if gt_layer.multiscale else gt_layer.data,
                       gt_layer.metadata)
    inside = (gt_y >= 0) & (gt_y < data.shape[-2])
    inside_x = (gt_x >= 0) & (gt_x < data.shape[-1])
    if not inside.any() or not inside_x.any():
        raise WsssError(f"ground truth '{gt_layer.name}' does not overlap the maps")
    out = np.full((h, w), 255, np.uint8)
    out[np.ix_(inside, inside_x)] = data[np.ix_(gt_y[inside], gt_x[inside_x])]
    return out


def fit_job(meta: LayerRecord, gt: np.ndarray, base: PostprocParams):
    from .. import tune

    cams = meta.slide_cams
    sample = tune.TuneSample(cams=np.asarray(cams.cams), gt=gt, image=_region_rgb(meta),
                             scores=cams.scores, pixel_scale=cams.out_stride)
    return (yield from tune.grid_search([sample], tune.default_grid(), base=base))
