"""Fine-tuning panel of the review widget: train on the corrections in the background.

Start runs :func:`wsss_napari.train.finetune.finetune` in a worker (the core holds the device
lock, so it never fights a CAM job for the device); Pause/Stop go through its
``FinetuneControl`` and take effect at the next step. When it finishes, the new model is saved
as a new version beside its parent (atomically, with the parent's hash) and can be applied to
the slide with one click, then compared with the previous maps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from .. import WsssError
from ..layer_record import LayerRecord
from ..params import FinetuneParams
from . import _tooltips as tips
from ._layers import record_of, region_rgb
from ._lossplot import LossPlot
from ._paramform import ParamsForm
from ._worker import JobRunner, notify_error, preload_torch

PREVIOUS = " (previous)"


class FinetunePanel(QWidget):
    """Start / pause / stop fine-tuning, live loss, apply and compare the new model."""

    def __init__(self, viewer: Any, review: Any) -> None:
        super().__init__()
        self.viewer, self.review = viewer, review
        self.control: Any = None
        self.new_model: Any = None
        self.new_model_path: str | None = None
        self.form = ParamsForm(FinetuneParams, skip=("seed", "device"))
        self.start_button = QPushButton("Fine-tune")
        self.start_button.setToolTip(tips.REVIEW["start"])
        self.start_button.clicked.connect(self._on_start_clicked)
        self.pause_button = QPushButton("Pause")
        self.pause_button.setToolTip(tips.REVIEW["pause"])
        self.pause_button.setCheckable(True)
        self.pause_button.setEnabled(False)
        self.pause_button.toggled.connect(self._on_pause_toggled)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip(tips.REVIEW["stop"])
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self._on_stop_clicked)
        self.apply_button = QPushButton("Apply new model")
        self.apply_button.setToolTip(tips.REVIEW["apply"])
        self.apply_button.setEnabled(False)
        self.apply_button.clicked.connect(self._on_apply_clicked)
        self.compare_button = QPushButton("Compare")
        self.compare_button.setToolTip(tips.REVIEW["compare"])
        self.compare_button.setEnabled(False)
        self.compare_button.clicked.connect(self._on_compare_clicked)
        self.bar = QProgressBar()
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.plot = LossPlot()
        self.runner = JobRunner(self.start_button, None, self.bar, self.status)
        self.runner.on_progress.append(self._on_job_progress)

        row = QHBoxLayout()
        for b in (self.start_button, self.pause_button, self.stop_button):
            row.addWidget(b)
        row2 = QHBoxLayout()
        row2.addWidget(self.apply_button)
        row2.addWidget(self.compare_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 8, 0, 0)
        layout.addWidget(QLabel("<b>Fine-tuning</b>"))
        layout.addWidget(self.form)
        layout.addLayout(row)
        layout.addWidget(self.bar)
        layout.addWidget(self.status)
        layout.addWidget(self.plot)
        layout.addLayout(row2)

    @property
    def params(self) -> FinetuneParams:
        return self.form.params  # type: ignore[return-value]

    @params.setter
    def params(self, value: FinetuneParams) -> None:
        self.form.params = value

    def start(self):
        """Fine-tune the maps' model on the corrected region; returns the worker or None."""
        from ..review_queue import excluded_pixels, finetune_labels
        from ..train.finetune import FinetuneControl

        try:
            layer = self.review.correction_layer
            if layer is None:
                raise WsssError("nothing to learn from yet: 'Edit region' and paint corrections")
            meta = LayerRecord.from_layer(layer)
            if meta.model is None:
                raise WsssError("the maps' model is unknown: recompute the maps (CAM widget)")
            params = self.params
            corrected, edited = self.review.corrected()
            if not params.pseudo_elsewhere and not edited.any():
                raise WsssError("no corrected pixels yet: paint on the 'Correction' layer, or "
                                "tick 'pseudo elsewhere' to learn from the whole region")
            self.review.flush()
            # the review queue's excluded (ambiguous) items stay out, pseudo elsewhere or not
            excluded = excluded_pixels(self.review.store.root, meta.geometry, edited.shape)
            labels = finetune_labels(corrected, edited, pseudo_elsewhere=params.pseudo_elsewhere,
                                     excluded=excluded)
            image = region_rgb(meta.slide, meta.geometry, labels.shape)
        except WsssError as err:
            notify_error(err)
            return None
        preload_torch()
        self.control = FinetuneControl()
        self.plot.clear()
        models_dir = Path(self.review.store.root).parent / "models"
        worker = self.runner.start(lambda: _finetune_job(meta, image, labels, params,
                                                         self.control, models_dir),
                                   self._on_job_returned, "fine-tuning")
        worker.started.connect(self._on_job_started)
        worker.finished.connect(self._on_job_finished)
        return worker

    def pause(self, paused: bool = True) -> None:
        self.pause_button.setChecked(paused)

    def stop(self) -> None:
        if self.control is not None:
            self.control.stop()

    def apply(self):
        """Recompute the maps with the new model, keeping the current ones as "(previous)"."""
        if self.new_model_path is None:
            return None
        cam = self._cam_widget()
        for lyr in list(self.viewer.layers):
            if lyr.name.endswith(PREVIOUS):
                self.viewer.layers.remove(lyr)
        for lyr in list(self.viewer.layers):
            rec = record_of(lyr)
            if rec is not None and rec.model is not None and rec.kind != "correction":
                lyr.name = lyr.name + PREVIOUS
                lyr.visible = False
        self.compare_button.setEnabled(True)
        return cam.run(model_source=self.new_model_path)

    def compare(self) -> None:
        """Toggle visibility between the new maps and the "(previous)" ones."""
        prev = [lyr for lyr in self.viewer.layers if lyr.name.endswith(PREVIOUS)]
        names = {lyr.name[: -len(PREVIOUS)] for lyr in prev}
        new = [lyr for lyr in self.viewer.layers if lyr.name in names]
        show_prev = not any(lyr.visible for lyr in prev)
        for lyr in prev:
            lyr.visible = show_prev
        for lyr in new:
            lyr.visible = not show_prev
        self.status.setText("showing the previous model" if show_prev else
                            "showing the fine-tuned model")

    def close_jobs(self) -> None:
        if self.control is not None:
            self.control.stop()
        self.runner.close()

    def _cam_widget(self) -> Any:
        _, widget = self.viewer.window.add_plugin_dock_widget("wsss-napari", "CAM")
        return widget

    def _on_job_started(self) -> None:
        self.pause_button.setEnabled(True)
        self.stop_button.setEnabled(True)

    def _on_job_finished(self) -> None:
        self.pause_button.setChecked(False)
        self.pause_button.setEnabled(False)
        self.stop_button.setEnabled(False)

    def _on_job_progress(self, p: Any) -> None:
        loss = p.info.get("loss")
        if isinstance(loss, (int, float)):
            self.plot.append(float(loss))

    def _on_job_returned(self, result: Any) -> None:
        self.new_model, path = result
        self.new_model_path = str(path)
        self.apply_button.setEnabled(True)
        self.status.setText(f"saved {self.new_model_path}")

    def _on_start_clicked(self) -> None:
        self.start()

    def _on_pause_toggled(self, paused: bool) -> None:
        if self.control is not None:
            (self.control.pause if paused else self.control.resume)()
        self.pause_button.setText("Resume" if paused else "Pause")

    def _on_stop_clicked(self) -> None:
        self.stop()

    def _on_apply_clicked(self) -> None:
        self.apply()

    def _on_compare_clicked(self) -> None:
        self.compare()


def _finetune_job(meta: LayerRecord, image: np.ndarray, labels: np.ndarray, params: FinetuneParams,
                  control: Any, models_dir: Path):
    """Worker: fine-tune on one corrected region, then save the new version (core)."""
    from ..train.versioned import finetune_version

    slide = meta.slide
    return (yield from finetune_version(
        meta.model, [(image, labels)], params, models_dir,
        slides=[str(getattr(slide, "path", None) or meta.source or "")],
        regions=[meta.geometry.region(labels.shape)], control=control))
