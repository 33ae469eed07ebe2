"""CAM widget: class activation maps of a slide region, computed in the background.

The widget only collects choices into a :class:`~wsss_napari.params.CamParams`, a model
source and a region, runs :func:`wsss_napari.inference.slide_cam.progressive_slide_cams` in a
worker and shows the maps as one additive image layer per class, aligned with the slide:
first the one-scale preview the worker yields, then the multi-scale result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtWidgets import QDoubleSpinBox, QFileDialog, QLineEdit

from .. import WsssError
from ..classes import CLASS_NAMES
from ..layer_record import LayerRecord
from ..params import CamParams
from ..region import Region
from . import _tooltips as tips
from ._base import (
    JobWidget,
    RegionChoice,
    button,
    refusable,
    require_layer,
    row,
    status_label,
)
from ._layers import (
    LayerCombo,
    class_colormap,
    field_of_view,
    is_shapes_layer,
    is_slide_layer,
    placement,
    shapes_bbox,
    slide_of,
)
from ._worker import preload_torch

REGIONS = ("Field of view", "Shapes ROI", "Whole slide")
#: Above this many pixels per class the maps are shown as a lazy multiscale layer.
MULTISCALE_PIXELS = 4096 * 4096


def load_model_cached(source: str, cache: dict) -> tuple[Any, str, str]:
    """Load (or reuse) the model ``source`` ('default' or a file); returns (model, path, hash)."""
    from ..models import checkpoint

    path = str(checkpoint.default_model_path() if source == "default" else Path(source))
    if path not in cache:
        model = checkpoint.load_model(source if source == "default" else path)
        cache.clear()  # keep one model in memory
        cache[path] = (model, path, checkpoint.file_hash(path))
    return cache[path]


def cam_layers_data(result: Any, slide_layer: Any, rec: LayerRecord) -> list[tuple]:
    """Layer-data tuples of the per-class maps of ``result`` (a ``SlideCams``), each with
    ``rec`` (the maps' record) and its class index in its metadata."""
    cams = result.cams
    n, h, w = cams.shape
    where = placement(slide_layer, result.geometry)
    out = []
    for c in range(n):
        data = _class_levels(cams, c) if h * w > MULTISCALE_PIXELS else np.asarray(cams[c])
        name = CLASS_NAMES[c] if c < len(CLASS_NAMES) else f"class {c}"
        kwargs = {
            "name": f"CAM {name}",
            "colormap": class_colormap(c) if c < len(CLASS_NAMES) else "gray",
            "blending": "additive",
            "contrast_limits": (0.0, 1.0),
            "opacity": 0.7,
            "multiscale": isinstance(data, list),
            "metadata": rec.replace(class_index=c).to_metadata(),
            **where,
        }
        out.append((data, kwargs, "image"))
    return out


def _class_levels(cams: Any, c: int) -> list:
    """Lazy pyramid (factor 2) of one class of an on-disk CAM array."""
    import dask.array as da

    base = da.from_zarr(cams)[c] if not isinstance(cams, da.Array) else cams[c]
    levels = [base.rechunk((1024, 1024))]
    while max(levels[-1].shape) > 1024:
        levels.append(da.coarsen(np.mean, levels[-1], {0: 2, 1: 2}, trim_excess=True)
                      .astype(np.float32))
    return levels


class CamWidget(RegionChoice, JobWidget):
    """Dock widget "CAM": slide + model + region + scales -> per-class activation layers."""

    REGIONS = REGIONS

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__(napari_viewer, "Compute maps", tips.CAM["run"],
                         cancel_tip=tips.CAM["cancel"])
        viewer = napari_viewer
        self.models: dict = {}
        self._base_params = CamParams()
        self.last_result: Any = None

        self.image_combo = LayerCombo(viewer, is_slide_layer)
        self.image_combo.setToolTip(tips.CAM["image"])
        self.model_edit = QLineEdit("default")
        self.model_edit.setToolTip(tips.CAM["model"])
        browse = button("…", tips.CAM["browse"], self._on_browse_clicked)
        self.shapes_combo = LayerCombo(viewer, is_shapes_layer)
        self.shapes_combo.setToolTip(tips.CAM["shapes"])
        self.scales_edit = QLineEdit(", ".join(f"{s:g}" for s in CamParams().scales))
        self.scales_edit.setToolTip(tips.CAM["scales"])
        self.mpp_spin = QDoubleSpinBox()
        self.mpp_spin.setRange(0.0, 50.0)
        self.mpp_spin.setDecimals(3)
        self.mpp_spin.setSingleStep(0.25)
        self.mpp_spin.setSpecialValueText("from file")  # 0 = what the file says
        self.mpp_spin.setToolTip(tips.CAM["slide_mpp"])
        self.scores_label = status_label()
        self.scores_label.setToolTip(tips.CAM["scores"])

        form = self.fields
        form.addRow("Slide", self.image_combo)
        form.addRow("Model", row(self.model_edit, browse))
        form.addRow("Region", self.make_region_combo(tips.CAM["region"]))
        form.addRow("ROI layer", self.shapes_combo)
        form.addRow("Scales", self.scales_edit)
        form.addRow("Slide µm/px", self.mpp_spin)
        self.finish_layout(below=(self.scores_label,))

    @property
    def params(self) -> CamParams:
        """The CAM parameters chosen in the widget."""
        try:
            scales = tuple(float(s) for s in self.scales_edit.text().replace(";", ",").split(",")
                           if s.strip())
        except ValueError as err:
            raise WsssError(f"scales must be numbers separated by commas, not "
                            f"'{self.scales_edit.text()}'") from err
        return self._base_params.replace(scales=scales)

    @params.setter
    def params(self, value: CamParams) -> None:
        self._base_params = value  # fields without a control here keep their value
        self.scales_edit.setText(", ".join(f"{s:g}" for s in value.scales))

    @property
    def model_source(self) -> str:
        """'default' or the path of a checkpoint file."""
        return self.model_edit.text().strip() or "default"

    @model_source.setter
    def model_source(self, value: str | Path) -> None:
        self.model_edit.setText(str(value))

    @property
    def busy(self) -> bool:
        """True while maps are being computed."""
        return self.runner.running

    def region(self, layer: Any) -> Region | None:
        """The chosen region in level-0 pixels of ``layer`` (None = whole slide)."""
        mode = self.region_mode
        if mode == "Whole slide":
            return None
        if mode == "Shapes ROI":
            shapes = require_layer(self.shapes_combo, "no Shapes layer: add one and draw a "
                                   "rectangle, or choose another region")
            return shapes_bbox(shapes, layer)
        return field_of_view(layer)

    @refusable
    def run(self, model_source: str | None = None):
        """Compute the maps with the current choices; returns the worker (None if refused)."""
        layer = require_layer(self.image_combo, "no slide: open one (File > Open) or a sample "
                              "(File > Open Sample > wsss-napari)")
        params, slide, region = self.params, slide_of(layer), self.region(layer)
        if self.mpp_spin.value() > 0:
            from ..io.slide import MppOverride

            slide = MppOverride(slide, self.mpp_spin.value())
        source = model_source or self.model_source
        preload_torch()
        worker = self.runner.start(lambda: self._job(slide, source, params, region),
                                   lambda res: self._on_job_returned(res, layer), "CAM")
        worker.yielded.connect(lambda item: self._on_preview(item, layer))
        return worker

    def cancel(self) -> None:
        self.runner.cancel()

    def _job(self, slide: Any, source: str, params: CamParams, region: Any):
        from ..inference.slide_cam import Preview, progressive_slide_cams
        from ..progress import Progress

        yield Progress("loading model", 0, 1)
        model, path, digest = load_model_cached(source, self.models)
        meta = {"model": model, "model_path": path, "model_hash": digest}
        from ..stain import slide_for_model

        gen = progressive_slide_cams(slide_for_model(slide, model), model, params, region=region)
        while True:  # the one-scale preview goes to the GUI thread as a yielded value
            try:
                item = next(gen)
            except StopIteration as stop:
                return stop.value, {**meta, "cam_params": params}
            if isinstance(item, Preview):
                item = (item.result, {**meta, "cam_params": item.params, "preview": True})
            yield item

    def _on_preview(self, item: Any, slide_layer: Any) -> None:
        """Show the one-scale maps while the other scales are computed."""
        if isinstance(item, tuple) and len(item) == 2:
            self._on_job_returned(item, slide_layer)
            self.status.setText("CAM: first maps (one scale) shown; refining…")

    def _on_job_returned(self, payload: tuple, slide_layer: Any) -> None:
        result, meta = payload
        meta = dict(meta)
        preview = meta.pop("preview", False)  # the job's flag, not part of the layer record
        self.last_result = result
        # e.g. an unknown mpp: the user sees it (once, with the final maps), not only the log
        if result.warnings and not preview:
            from napari.utils.notifications import show_warning

            for w in result.warnings:
                show_warning(w)
        rec = LayerRecord(kind="cams", **meta, slide_cams=result, source=slide_layer.name,
                          slide=slide_of(slide_layer), geometry=result.geometry)
        for data, kwargs, _ in cam_layers_data(result, slide_layer, rec):
            name = kwargs["name"]
            if name in self.viewer.layers:
                self.viewer.layers.remove(name)
            self.viewer.add_image(data, **kwargs)
        scores = np.asarray(result.scores, dtype=float).ravel()
        self.scores_label.setText("Image-level scores: " + ", ".join(
            f"{n} {s:.2f}" for n, s in zip(result.class_names or CLASS_NAMES, scores,
                                           strict=False)))

    def _on_browse_clicked(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Model checkpoint", "",
                                              "Checkpoints (*.safetensors)")
        if path:
            self.model_source = path
