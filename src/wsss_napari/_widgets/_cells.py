"""Cells widget: per-cell classes (CAM x nuclei) as a Points layer coloured by class.

Wiring only: :func:`wsss_napari.cells.collect_cells` runs in a worker on the CAMs of a CAM
layer (made by the CAM widget) and its slide, with the built-in nuclei or a Labels layer's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from qtpy.QtWidgets import QCheckBox, QSpinBox

from .. import WsssError
from ..classes import PALETTE
from ..layer_record import LayerRecord
from ..params import CellParams
from ..region import MaskGeometry
from . import _tooltips as tips
from ._base import JobWidget, RegionChoice, refusable, require_layer
from ._layers import (
    LayerCombo,
    field_of_view,
    is_cam_layer,
    is_labels_layer,
    placement,
    record_of,
)

REGIONS = ("Field of view", "Whole slide")


class CellsWidget(RegionChoice, JobWidget):
    """Dock widget "Cells": CAM layer (+ optional Labels layer) -> Points layer by class."""

    REGIONS = REGIONS

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__(napari_viewer, "Label cells", tips.CELLS["run"])
        viewer = napari_viewer
        self._base_params = CellParams()
        self.last_cells: Any = None
        self.cam_combo = LayerCombo(viewer, is_cam_layer,
                                    unique_by=lambda lyr: id(record_of(lyr).slide_cams))
        self.cam_combo.setToolTip(tips.CELLS["cams"])
        self.use_labels = QCheckBox("Nuclei from a Labels layer")
        self.use_labels.setToolTip(tips.CELLS["instances"])
        self.labels_combo = LayerCombo(viewer, is_labels_layer)
        self.dilate_spin = QSpinBox()
        self.dilate_spin.setRange(0, 1000)
        self.dilate_spin.setToolTip(tips.CELLS["dilate"])
        form = self.fields
        form.addRow("CAMs", self.cam_combo)
        form.addRow(self.use_labels)
        form.addRow("Labels layer", self.labels_combo)
        form.addRow("Dilate (px)", self.dilate_spin)
        form.addRow("Region", self.make_region_combo(tips.CELLS["region"]))
        self.finish_layout()

    @property
    def params(self) -> CellParams:
        return self._base_params.replace(dilate=int(self.dilate_spin.value()))

    @params.setter
    def params(self, value: CellParams) -> None:
        self._base_params = value
        self.dilate_spin.setValue(value.dilate)

    @refusable
    def run(self):
        """Label the cells with the current choices; returns the worker (None if refused)."""
        cam_layer = require_layer(self.cam_combo,
                                  "no CAM layer: compute maps with the CAM widget first")
        meta = LayerRecord.from_layer(cam_layer)
        cams, slide, source = meta.slide_cams, meta.slide, meta.source
        if slide is None or source not in self.viewer.layers:
            raise WsssError("the slide of these CAMs is no longer open")
        slide_layer = self.viewer.layers[source]
        region = field_of_view(slide_layer) if self.region_mode == "Field of view" else None
        instances = None
        if self.use_labels.isChecked():
            labels = require_layer(self.labels_combo,
                                   "no Labels layer with nuclei: add one or untick the box")
            instances = labels.data[0] if labels.multiscale else labels.data
        params = self.params
        return self.runner.start(
            lambda: self._job(slide, cams, params, region, instances),
            lambda res: self._on_job_returned(res, slide_layer), "cells")

    def _job(self, slide: Any, cams: Any, params: CellParams, region: Any, instances: Any):
        from ..cells import collect_cells

        return (yield from collect_cells(slide, cams, params, region, instances))

    def _on_job_returned(self, payload: tuple, slide_layer: Any) -> None:
        table, names = payload
        self.last_cells = table
        colors = np.array([[*(np.asarray(PALETTE[c]) / 255.0), 1.0] if c < len(PALETTE)
                           else [0.5, 0.5, 0.5, 1.0] for c in table.label]).reshape(-1, 4)
        points = np.stack([table.centroid_y - 0.5, table.centroid_x - 0.5], axis=1)
        if "Cells" in self.viewer.layers:
            self.viewer.layers.remove("Cells")
        self.viewer.add_points(
            points.reshape(-1, 2), name="Cells", face_color=colors, size=8, border_width=0,
            features={"class": [names[c] for c in table.label],
                      "confidence": np.asarray(table.confidence, float)},
            metadata=LayerRecord(kind="cells", cells=len(table)).to_metadata(),
            **placement(slide_layer, MaskGeometry()))
        self.status.setText(f"{len(table)} cells: " + ", ".join(
            f"{n} {int((table.label == c).sum())}" for c, n in enumerate(names)))
