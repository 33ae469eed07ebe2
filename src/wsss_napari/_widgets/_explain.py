"""Attention widget: rollout maps of a transformer / hybrid model, as layers beside the CAMs.

Wiring only: the maps come from :func:`wsss_napari.models.rollout.explain_region`, run in a
worker; each map becomes an additive image layer aligned with the slide.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qtpy.QtWidgets import QComboBox, QFileDialog, QLineEdit

from .. import WsssError
from ..classes import CLASS_NAMES
from ..layer_record import LayerRecord
from ..region import MaskGeometry
from . import _tooltips as tips
from ._base import JobWidget, RegionChoice, button, refusable, require_layer, row
from ._cam import load_model_cached
from ._layers import (
    LayerCombo,
    class_colormap,
    field_of_view,
    is_slide_layer,
    placement,
    slide_of,
)
from ._worker import preload_torch

METHODS = {"Rollout": ("rollout",), "Gradient-weighted rollout": ("grad-rollout",),
           "Both": ("rollout", "grad-rollout")}
REGIONS = ("Field of view", "Whole image")


class AttentionWidget(RegionChoice, JobWidget):
    """Dock widget "Attention maps": image + model + method -> rollout layers."""

    REGIONS = REGIONS

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__(napari_viewer, "Compute attention maps", tips.ATTENTION["run"])
        viewer = napari_viewer
        self.models: dict = {}
        self.last_maps: list = []
        self.image_combo = LayerCombo(viewer, is_slide_layer)
        self.image_combo.setToolTip(tips.ATTENTION["image"])
        self.model_edit = QLineEdit("")
        self.model_edit.setToolTip(tips.ATTENTION["model"])
        self.method_combo = QComboBox()
        self.method_combo.addItems(list(METHODS))
        self.method_combo.setCurrentText("Both")
        self.method_combo.setToolTip(tips.ATTENTION["method"])
        form = self.fields
        form.addRow("Image", self.image_combo)
        form.addRow("Model", row(self.model_edit, button("…", None, self._on_browse_clicked)))
        form.addRow("Method", self.method_combo)
        form.addRow("Region", self.make_region_combo(tips.ATTENTION["region"]))
        self.finish_layout()

    @property
    def model_source(self) -> str:
        return self.model_edit.text().strip()

    @model_source.setter
    def model_source(self, value: str | Path) -> None:
        self.model_edit.setText(str(value))

    @property
    def methods(self) -> tuple[str, ...]:
        return METHODS[self.method_combo.currentText()]

    @refusable
    def run(self):
        """Compute the maps with the current choices; returns the worker (None if refused)."""
        layer = require_layer(self.image_combo, "no image: open one (File > Open)")
        if not self.model_source:
            raise WsssError("choose a transformer or hybrid model checkpoint (.safetensors)")
        slide = slide_of(layer)
        region = field_of_view(layer) if self.region_mode == "Field of view" else None
        source, methods = self.model_source, self.methods
        preload_torch()
        return self.runner.start(lambda: self._job(slide, source, methods, region),
                                 lambda res: self._on_job_returned(res, layer), "attention")

    def _job(self, slide: Any, source: str, methods: tuple[str, ...], region: Any):
        from ..models.rollout import explain_region
        from ..progress import Progress

        yield Progress("loading model", 0, len(methods) + 1)
        model, path, _ = load_model_cached(source, self.models)
        out = []
        for i, method in enumerate(methods):
            yield Progress(method, i + 1, len(methods) + 1)
            out.append(explain_region(slide, model, region, method))
        return out, path

    def _on_job_returned(self, payload: tuple, slide_layer: Any) -> None:
        results, path = payload
        self.last_maps = results
        for maps, where in results:
            for k, name in enumerate(maps.names):
                if maps.method == "rollout":
                    title, cmap = "Attention rollout", "inferno"
                else:
                    title = f"Attention {name}"
                    c = CLASS_NAMES.index(name) if name in CLASS_NAMES else -1
                    cmap = class_colormap(c) if c >= 0 else "gray"
                if title in self.viewer.layers:
                    self.viewer.layers.remove(title)
                self.viewer.add_image(
                    maps.maps[k], name=title, colormap=cmap, blending="additive",
                    contrast_limits=(0.0, 1.0), opacity=0.7,
                    metadata=LayerRecord(kind="attention", attention=maps.method,
                                         model_path=path, region=where.to_dict(),
                                         ).to_metadata(),
                    **placement(slide_layer, MaskGeometry(y=where.y, x=where.x)))

    def _on_browse_clicked(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Model checkpoint", "",
                                              "Checkpoints (*.safetensors)")
        if path:
            self.model_source = path
