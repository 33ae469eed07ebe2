"""Attention widget: rollout maps of a transformer / hybrid model, as layers beside the CAMs.

Wiring only: the maps come from :func:`wsss_napari.models.rollout.explain_region`, run in a
worker; each map becomes an additive image layer aligned with the slide.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from .. import WsssError
from ..classes import CLASS_NAMES
from ..region import MaskGeometry
from . import _tooltips as tips
from ._cam import load_model_cached
from ._layers import (
    WSSS,
    LayerCombo,
    class_colormap,
    field_of_view,
    install_lifecycle,
    is_slide_layer,
    placement,
    slide_of,
)
from ._worker import JobRunner, preload_torch

METHODS = {"Rollout": ("rollout",), "Gradient-weighted rollout": ("grad-rollout",),
           "Both": ("rollout", "grad-rollout")}
REGIONS = ("Field of view", "Whole image")


class AttentionWidget(QWidget):
    """Dock widget "Attention maps": image + model + method -> rollout layers."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = viewer = napari_viewer
        install_lifecycle(viewer)
        self.models: dict = {}
        self.last_maps: list = []
        self.image_combo = LayerCombo(viewer, is_slide_layer)
        self.image_combo.setToolTip(tips.ATTENTION["image"])
        self.model_edit = QLineEdit("")
        self.model_edit.setToolTip(tips.ATTENTION["model"])
        browse = QPushButton("…")
        browse.clicked.connect(self._on_browse_clicked)
        model_row = QHBoxLayout()
        model_row.addWidget(self.model_edit)
        model_row.addWidget(browse)
        self.method_combo = QComboBox()
        self.method_combo.addItems(list(METHODS))
        self.method_combo.setCurrentText("Both")
        self.method_combo.setToolTip(tips.ATTENTION["method"])
        self.region_combo = QComboBox()
        self.region_combo.addItems(REGIONS)
        self.region_combo.setToolTip(tips.ATTENTION["region"])
        self.run_button = QPushButton("Compute attention maps")
        self.run_button.setToolTip(tips.ATTENTION["run"])
        self.run_button.clicked.connect(self._on_run_clicked)
        self.bar = QProgressBar()
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.runner = JobRunner(self.run_button, None, self.bar, self.status)
        form = QFormLayout()
        form.addRow("Image", self.image_combo)
        form.addRow("Model", model_row)
        form.addRow("Method", self.method_combo)
        form.addRow("Region", self.region_combo)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.run_button)
        layout.addWidget(self.bar)
        layout.addWidget(self.status)
        layout.addStretch(1)

    @property
    def model_source(self) -> str:
        return self.model_edit.text().strip()

    @model_source.setter
    def model_source(self, value: str | Path) -> None:
        self.model_edit.setText(str(value))

    @property
    def methods(self) -> tuple[str, ...]:
        return METHODS[self.method_combo.currentText()]

    @property
    def region_mode(self) -> str:
        return self.region_combo.currentText()

    @region_mode.setter
    def region_mode(self, value: str) -> None:
        if value not in REGIONS:
            raise WsssError(f"region must be one of {REGIONS}")
        self.region_combo.setCurrentText(value)

    def run(self):
        """Compute the maps with the current choices; returns the worker (None if refused)."""
        try:
            layer = self.image_combo.layer
            if layer is None:
                raise WsssError("no image: open one (File > Open)")
            if not self.model_source:
                raise WsssError("choose a transformer or hybrid model checkpoint (.safetensors)")
            slide = slide_of(layer)
            region = field_of_view(layer) if self.region_mode == "Field of view" else None
            source, methods = self.model_source, self.methods
            preload_torch()
            return self.runner.start(lambda: self._job(slide, source, methods, region),
                                     lambda res: self._on_job_returned(res, layer), "attention")
        except WsssError as err:
            from ._worker import notify_error

            notify_error(err)
            return None

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
                    metadata={WSSS: {"attention": maps.method, "model_path": path,
                                     "region": where.to_dict()}},
                    **placement(slide_layer, MaskGeometry(y=where.y, x=where.x)))

    def _on_run_clicked(self) -> None:
        self.run()

    def _on_browse_clicked(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Model checkpoint", "",
                                              "Checkpoints (*.safetensors)")
        if path:
            self.model_source = path

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        self.runner.close()
        super().closeEvent(event)
