"""Pseudo-mask tuning widget: sliders over the post-processing, recomputed from cached CAMs.

Moving a slider never runs the network: a :class:`~wsss_napari.postproc.LiveTuner` built once
from the CAM widget's cached maps recomputes the tissue map. When maps of another model
arrive, the sliders start from that model's recommended post-processing (tuned when the model
was made, ``models.checkpoint.recommended_postproc``). While the slider moves, a preview
at the displayed size is computed (debounced); on release, the full resolution. Recomputes run
in a worker; a generation counter drops results that a newer request has made stale.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from .. import WsssError
from ..classes import CLASS_NAMES, LABEL_NAMES
from ..labels_encoding import ENCODING
from ..layer_record import LayerRecord
from ..params import PostprocParams
from . import _tooltips as tips
from ._base import button, row, status_label
from ._layers import (
    LayerCombo,
    install_lifecycle,
    is_cam_layer,
    record_of,
)
from ._paramform import ParamsForm
from ._segmask import MaskFromChoice
from ._tunelayers import fit_job, is_ground_truth, make_tuner, resample_to_cams, show_mask
from ._worker import JobRunner, notify_error

MASK_LAYER = "Pseudo-mask"
DEBOUNCE_MS = 150
#: Below this edge (px) the preview is skipped: the full map is as cheap.
MIN_PREVIEW = 256


class TuneWidget(QWidget):
    """Dock widget "Pseudo-mask tuning"."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = viewer = napari_viewer
        install_lifecycle(viewer)
        self.tuner: Any = None
        self.tuner_key: Any = None
        self.generation = 0
        self._tuner_lock = threading.Lock()
        self._recompute_workers: set = set()
        self.params_source: Any = None  # the model whose recommended params the sliders hold
        self.history: list[PostprocParams] = []  # earlier committed parameters, for Undo
        self._committed: PostprocParams | None = None
        from ..postproc import warm_up

        warm_up()  # compiles the post-processing loops before the first slider move

        file_row = self._make_controls(viewer)
        self._lay_out(file_row)
        self._on_cams_changed()  # maps computed before this widget opened
        self._committed = self.params

    def _make_controls(self, viewer: Any) -> QHBoxLayout:
        """The combos, sliders, suppress boxes and buttons, wired to their handlers; returns
        the Load / Save / Reset / Undo row."""
        self.cams_combo = LayerCombo(viewer, is_cam_layer,
                                     unique_by=lambda lyr: id(record_of(lyr).slide_cams))
        self.cams_combo.setToolTip(tips.TUNE["cams"])
        self.cams_combo.currentIndexChanged.connect(self._on_cams_changed)
        self.form = ParamsForm(PostprocParams)
        self.form.changed.connect(self._on_form_changed)
        self.form.committed.connect(self._on_form_committed)
        self.suppress: dict[str, QCheckBox] = {}
        for name in CLASS_NAMES:
            box = QCheckBox(name)
            box.setToolTip(tips.TUNE["suppress"])
            box.toggled.connect(self._on_form_committed)
            self.suppress[name] = box
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.setInterval(DEBOUNCE_MS)
        self.timer.timeout.connect(self._on_timer_timeout)

        self.gt_combo = LayerCombo(viewer, is_ground_truth)
        self.gt_combo.setToolTip(tips.TUNE["gt"])
        self.fit_button = button("Fit to ground truth", tips.TUNE["fit"], self._on_fit_clicked)
        self.fit_cancel = QPushButton("Cancel")
        self.undo_button = button("Undo", tips.TUNE["undo"], self.undo)
        self.undo_button.setEnabled(False)
        self.status = status_label()
        self.iou_label = status_label()
        self.bar = QProgressBar()
        self.fit_runner = JobRunner(self.fit_button, self.fit_cancel, self.bar, self.status)
        self.mask_from = MaskFromChoice(self)  # segmentation model or CAMs + sliders
        return row(button("Load…", tips.TUNE["load"], self._on_load_clicked),
                   button("Save…", tips.TUNE["save"], self._on_save_clicked),
                   button("Reset", tips.TUNE["reset"], self.reset), self.undo_button)

    def _lay_out(self, file_row: QHBoxLayout) -> None:
        """Maps and suppress boxes, the sliders, the file row, ground truth and fitting, top
        to bottom."""
        top = QFormLayout()
        top.addRow("Maps", self.cams_combo)
        top.addRow("Mask from", row(self.mask_from.combo, self.mask_from.epithelium))
        top.addRow("Suppress", row(*self.suppress.values()))
        gt_form = QFormLayout()
        gt_form.addRow("Ground truth", self.gt_combo)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.form)
        layout.addLayout(file_row)
        layout.addLayout(gt_form)
        layout.addLayout(row(self.fit_button, self.fit_cancel))
        layout.addWidget(self.bar)
        layout.addWidget(self.status)
        layout.addWidget(self.iou_label)
        layout.addStretch(1)

    # -------------------------------------------------------------------- typed state

    @property
    def params(self) -> PostprocParams:
        """The post-processing parameters the sliders describe."""
        return self.form.params  # type: ignore[return-value]

    @params.setter
    def params(self, value: PostprocParams) -> None:
        self.form.params = value
        self._remember()
        self.recompute(preview=False)

    def reset(self) -> None:
        """Sliders back to the recommendation of the maps' model (or the defaults); undoable."""
        from ..models.checkpoint import recommended_postproc

        layer = self.cams_combo.layer
        model = None if layer is None else LayerRecord.from_layer(layer).model
        try:
            self.params = PostprocParams() if model is None else recommended_postproc(model)
        except WsssError as err:
            notify_error(err)

    def undo(self) -> None:
        """Sliders back to the parameters before the last committed change."""
        if not self.history:
            return
        previous = self.history.pop()
        self.form.params = previous
        self._committed = previous
        self.undo_button.setEnabled(bool(self.history))
        self.recompute(preview=False)

    def _remember(self) -> None:
        """Keep the parameters that a committed change replaces (the last 50), for Undo."""
        current = self.params
        if self._committed is not None and current != self._committed:
            self.history = [*self.history, self._committed][-50:]
        self._committed = current
        self.undo_button.setEnabled(bool(self.history))

    @property
    def present(self) -> tuple[bool, ...]:
        """Per foreground class: False where the user suppressed it."""
        return tuple(not self.suppress[n].isChecked() for n in CLASS_NAMES)

    @property
    def busy(self) -> bool:
        """True while a recompute or a fit is running."""
        return bool(self._recompute_workers) or self.fit_runner.running

    @property
    def mask_layer(self) -> Any | None:
        return self.viewer.layers[MASK_LAYER] if MASK_LAYER in self.viewer.layers else None

    # -------------------------------------------------------------------- recompute

    def recompute(self, preview: bool = False):
        """Recompute the pseudo-mask from the cached maps (a preview at the displayed size,
        or full resolution); returns the worker, or None when there are no maps."""
        from napari.qt.threading import create_worker

        cam_layer = self.cams_combo.layer
        if cam_layer is None:
            return None
        try:
            params, present = self.params, self.present
        except WsssError as err:
            notify_error(err)
            return None
        self.generation += 1
        gen, meta = self.generation, LayerRecord.from_layer(cam_layer)
        if self.mask_from.active:
            return self.mask_from.recompute(meta, params, present, gen)
        max_size = self._display_size(meta) if preview else None
        worker = create_worker(self._compute, meta, params, present, max_size, gen,
                               _start_thread=False, _ignore_errors=True)
        worker.returned.connect(self._on_recompute_returned)
        worker.errored.connect(lambda err: notify_error(err, "pseudo-mask"))
        worker.finished.connect(lambda: self._recompute_workers.discard(worker))
        self._recompute_workers.add(worker)
        self.status.setText("preview…" if preview else "computing the pseudo-mask…")
        worker.start()
        return worker

    def _compute(self, meta: LayerRecord, params: PostprocParams, present: tuple,
                 max_size: int | None, gen: int):
        """Worker thread: build the tuner once per maps, then run it (unless stale)."""
        if gen != self.generation:
            return None
        with self._tuner_lock:
            if gen != self.generation:
                return None
            key = id(meta.slide_cams)
            if self.tuner_key != key:
                self.tuner = make_tuner(meta)
                self.tuner_key = key
            tuner = self.tuner
        from ..postproc.pipeline import Cancelled

        def stale() -> bool:
            return gen != self.generation

        try:
            if max_size is not None:
                mask = tuner.preview(params, max_size, present=present, should_stop=stale)
            else:
                mask = tuner.run(params, present=present, should_stop=stale)
        except Cancelled:
            return None
        return gen, meta, params, present, mask, max_size is not None

    def _on_recompute_returned(self, out: Any) -> None:
        if out is None or out[0] != self.generation:
            return  # a newer recompute is on its way
        _, meta, params, present, mask, is_preview = out
        cams = meta.slide_cams
        full = tuple(cams.cams.shape[-2:])
        if mask.shape != full:
            import cv2

            mask = cv2.resize(mask, full[::-1], interpolation=cv2.INTER_NEAREST)
        show_mask(self.viewer, MASK_LAYER, mask, meta.replace(
            kind="mask", slide_cams=None, class_index=None, slide_cams_id=id(cams),
            geometry=cams.geometry, postproc_params=params, present=present, mask_from="cam",
            label_names=LABEL_NAMES, label_encoding=ENCODING), cams, self._slide_layer(meta))
        self.status.setText("preview (release the slider for full resolution)" if is_preview
                            else f"pseudo-mask {mask.shape[1]} x {mask.shape[0]} px")

    def _display_size(self, meta: LayerRecord) -> int | None:
        """Edge in screen pixels that the maps span now (None: preview would not be cheaper)."""
        cams = meta.slide_cams
        h, w = cams.cams.shape[-2:]
        slide_layer = self._slide_layer(meta)
        scale = np.asarray(slide_layer.scale[-2:]) * cams.downsample if slide_layer else 1.0
        camera = getattr(self.viewer, "scene", self.viewer).camera  # napari >= 0.9: scene
        on_screen = float(np.max(np.array([h, w]) * scale) * camera.zoom)
        size = int(max(MIN_PREVIEW, on_screen))
        return size if size < max(h, w) else None

    def _slide_layer(self, meta: LayerRecord) -> Any | None:
        name = meta.source
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def _on_cams_changed(self, *_: Any) -> None:
        layer = self.cams_combo.layer
        if layer is not None:
            self._adopt_recommended(LayerRecord.from_layer(layer))
            self.mask_from.adopt(LayerRecord.from_layer(layer))
            self.recompute(preview=False)

    def _adopt_recommended(self, meta: LayerRecord) -> None:
        """Set the sliders to the recommended post-processing of the maps' model, once per
        model (so the user's own settings survive recomputing maps with the same model)."""
        from ..models.checkpoint import POSTPROC_KEY, recommended_postproc

        model = meta.model
        key = meta.model_hash or meta.model_path or id(model)
        if model is None or key == self.params_source:
            return
        self.params_source = key
        if POSTPROC_KEY not in (getattr(model.config, "extra", None) or {}):
            return  # no recommendation: keep what the sliders hold
        try:
            self.form.params = recommended_postproc(model)
        except WsssError as err:
            notify_error(err)
        self._committed = self.form.params  # another model: a new starting point

    def _on_form_changed(self) -> None:
        self.timer.start()

    def _on_timer_timeout(self) -> None:
        self.recompute(preview=True)

    def _on_form_committed(self, *_: Any) -> None:
        self.timer.stop()
        self._remember()
        self.recompute(preview=False)

    # -------------------------------------------------------------------- fit / files

    def fit(self):
        """Grid-search the parameters against the chosen ground-truth layer (in a worker)."""
        try:
            cam_layer, gt_layer = self.cams_combo.layer, self.gt_combo.layer
            if cam_layer is None or gt_layer is None:
                raise WsssError("fitting needs maps (run the CAM widget) and a ground-truth "
                                "Labels layer over the same area")
            meta = LayerRecord.from_layer(cam_layer)
            gt = resample_to_cams(gt_layer, self._slide_layer(meta), meta.slide_cams)
            base = self.params
            return self.fit_runner.start(lambda: fit_job(meta, gt, base),
                                         self._on_fit_returned, "fit")
        except WsssError as err:
            notify_error(err)
            return None

    def _on_fit_clicked(self) -> None:
        self.fit()

    def _on_fit_returned(self, result: Any) -> None:
        self.params = result.best
        report = result.report
        per_class = report.get("iou", {})
        self.iou_label.setText(
            f"mIoU {report.get('miou', float('nan')):.3f}: "
            + ", ".join(f"{k} {v:.3f}" for k, v in per_class.items()))

    def _on_load_clicked(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Post-processing parameters", "",
                                              "Parameters (*.json *.yaml *.yml)")
        if path:
            try:
                self.params = PostprocParams.from_file(path)
            except WsssError as err:
                notify_error(err)

    def _on_save_clicked(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save parameters", "postproc.json",
                                              "JSON (*.json)")
        if path:
            self.save_params(path)

    def save_params(self, path: str) -> None:
        """Write the current parameters as JSON (atomically)."""
        from ..io.atomic import atomic_write_text

        try:
            atomic_write_text(path, json.dumps({"postproc": self.params.to_dict()}, indent=2))
        except WsssError as err:
            notify_error(err)

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        self.generation += 1
        self.fit_runner.close()
        for w in list(self._recompute_workers):
            w.await_workers(msecs=5000) if hasattr(w, "await_workers") else None
        super().closeEvent(event)
