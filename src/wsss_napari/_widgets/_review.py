"""Review widget: correct the pseudo-mask on an editable layer (autosaved), then fine-tune.

napari cannot paint multiscale labels, so "Edit region" copies a single-resolution region of
the tissue map (the field of view, or all of it when small) into a Labels layer
"Correction", with earlier edits of the slide restored from its on-disk
:class:`~wsss_napari.corrections.store.EditStore`. Paint events mark the painted box for the
:class:`~wsss_napari.corrections.autosave.Autosaver` (written within seconds); napari's own
undo/redo keeps working because the layer's data is never replaced while editing.

The layer holds :mod:`wsss_napari.labels_encoding` values (``class + 1``; ``0`` = not
corrected), so napari's eraser means "forget my correction here" (the store keeps ``255``,
and the automatic map shows through), never "tumor".
"""

from __future__ import annotations

from typing import Any

import numpy as np
from qtpy.QtCore import QTimer, Signal
from qtpy.QtWidgets import (
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from .. import WsssError
from ..classes import TUMOR
from ..labels_encoding import (
    ENCODING,
    LAYER_NOTHING,
    UNLABELLED,
    core_labels,
    from_layer,
    is_layer_encoded,
    layer_value,
    to_layer,
)
from ..layer_record import LayerRecord
from ..region import MaskGeometry, Region
from . import _tooltips as tips
from ._base import EditsFolder, button, open_edit_store, require_layer, row
from ._finetune import FinetunePanel
from ._layers import (
    LayerCombo,
    field_of_view,
    install_lifecycle,
    is_kind,
    labels_colormap,
    layer_mask,
)
from ._worker import notify_error

CORRECTION_LAYER = "Correction"
#: Maps up to this edge (px) are edited whole; larger ones by field of view.
WHOLE_MAP_EDGE = 2048
#: Opacity of background (glass) in the Correction layer, so painted background shows.
BACKGROUND_ALPHA = 0.6


def _is_mask_layer(layer: Any) -> bool:
    from napari.layers import Labels

    return isinstance(layer, Labels) and is_kind(layer, "mask")


def _map_window(mask_layer: Any, geo: MaskGeometry, region: Region | None
                ) -> tuple[int, int, int, int]:
    """The map pixels ``(y, x, h, w)`` an edit covers: those under the level-0 ``region``,
    else the whole map when small, else the field of view (``WsssError`` when outside)."""
    full = mask_layer.data.shape[-2:]
    if region is None:
        fov = Region.whole(*full) if max(full) <= WHOLE_MAP_EDGE else \
            field_of_view(mask_layer)  # in map pixels: the layer's data
        return int(fov.y), int(fov.x), int(fov.height), int(fov.width)
    ys, xs = geo.slices(region)
    y, x = max(ys.start, 0), max(xs.start, 0)
    h, w = min(ys.stop, full[0]) - y, min(xs.stop, full[1]) - x
    if h <= 0 or w <= 0:
        raise WsssError(f"region {region.describe()} lies outside the tissue map")
    return y, x, h, w


class ReviewWidget(EditsFolder, QWidget):
    """Dock widget "Review and fine-tune"."""

    autosave_failed = Signal(object)

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = viewer = napari_viewer
        install_lifecycle(viewer)
        self.store: Any = None
        self.autosaver: Any = None
        self.painted: np.ndarray | None = None  # pixels touched since the region opened
        self.base: np.ndarray | None = None  # the map under the region when it was opened
        self._dirty: list = []
        self.autosave_failed.connect(lambda err: notify_error(err, "autosave"))

        self.mask_combo = LayerCombo(viewer, _is_mask_layer)
        self.mask_combo.setToolTip(tips.REVIEW["mask"])
        folder_row = row(self.make_project_edit(tips.REVIEW["folder"]),
                         button("…", None, self._on_browse_clicked))
        self.edit_button = QPushButton("Edit region")
        self.edit_button.setToolTip(tips.REVIEW["edit"])
        self.edit_button.clicked.connect(self._on_edit_clicked)
        self.write_button = QPushButton("Write back")
        self.write_button.setToolTip(tips.REVIEW["write_back"])
        self.write_button.clicked.connect(self._on_write_clicked)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.undo_timer = QTimer(self)
        self.undo_timer.setSingleShot(True)
        self.undo_timer.setInterval(300)
        self.undo_timer.timeout.connect(self._on_undo_timer_timeout)
        self.finetune = FinetunePanel(viewer, self)

        form = QFormLayout()
        form.addRow("Tissue map", self.mask_combo)
        form.addRow("Edits folder", folder_row)
        buttons = QHBoxLayout()
        buttons.addWidget(self.edit_button)
        buttons.addWidget(self.write_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.status)
        layout.addWidget(self.finetune)
        layout.addStretch(1)

    @property
    def correction_layer(self) -> Any | None:
        lyr = self.viewer.layers[CORRECTION_LAYER] if CORRECTION_LAYER in self.viewer.layers \
            else None
        return lyr if lyr is not None and is_kind(lyr, "correction") else None

    def edit_region(self, region: Region | None = None):
        """Open the editable "Correction" layer over the map pixels that cover the level-0
        ``region`` (default: the field of view, or the whole map when small); returns the
        layer."""
        from ..corrections.autosave import Autosaver

        try:
            mask_layer = require_layer(self.mask_combo, "no tissue map: compute maps (CAM) "
                                       "and a pseudo-mask first")
            meta = LayerRecord.from_layer(mask_layer)
            if meta.geometry is None:
                raise WsssError(f"layer '{mask_layer.name}' does not say where it lies on "
                                "the slide: recompute the pseudo-mask")
            geo: MaskGeometry = meta.geometry
            full = mask_layer.data.shape[-2:]
            y, x, h, w = _map_window(mask_layer, geo, region)
            self._close_store()
            self._dirty = []
            self.store = open_edit_store(meta, full, self.project)
            self.autosaver = Autosaver(self.store, delay=2.0, on_error=self.autosave_failed.emit)
        except WsssError as err:
            notify_error(err)
            return None
        oy, ox = (int(round(v)) for v in self.store.geometry.from_level0(geo.y, geo.x))
        sy, sx = oy + y, ox + x  # region in store (slide-level map) pixels
        try:
            base = layer_mask(mask_layer)[y:y + h, x:x + w]
            edits = self.store.read(sy, sx, h, w)
            self.painted = edits != UNLABELLED
            self.base = base
            data = to_layer(np.where(self.painted, edits, base))
        except WsssError as err:
            notify_error(err)
            return None
        if CORRECTION_LAYER in self.viewer.layers:
            self.viewer.layers.remove(CORRECTION_LAYER)
        scale = np.asarray(mask_layer.scale[-2:])
        translate = np.asarray(mask_layer.translate[-2:]) + np.array([y, x]) * scale
        layer = self.viewer.add_labels(
            data, name=CORRECTION_LAYER, scale=tuple(scale), translate=tuple(translate),
            units=tuple(mask_layer.units)[-2:],
            colormap=labels_colormap(BACKGROUND_ALPHA), opacity=0.7,
            metadata=meta.replace(
                kind="correction", label_encoding=ENCODING, region=(y, x, h, w),
                store_region=(sy, sx, h, w), geometry=geo.crop(y, x),
                mask_layer=mask_layer.name, edit_store=self.store).to_metadata())
        layer.events.paint.connect(self._on_correction_paint)
        layer.events.set_data.connect(self._on_correction_set_data)
        layer.selected_label = layer_value(TUMOR)
        layer.mode = "paint"
        n = int(self.painted.sum())
        self.status.setText(f"editing {w} x {h} px" + (f"; {n} earlier edited px restored"
                                                        if n else ""))
        return layer

    def write_back(self) -> None:
        """Merge the correction into the tissue map layer and save every pending edit."""
        layer = self.correction_layer
        if layer is None:
            notify_error(WsssError("nothing to write back: use 'Edit region' first"))
            return
        meta = LayerRecord.from_layer(layer)
        name = meta.mask_layer
        if name not in self.viewer.layers:
            notify_error(WsssError(f"the tissue map '{name}' is no longer open"))
            return
        y, x, h, w = meta.region
        target = self.viewer.layers[name]
        try:
            corrected, edited = self.corrected()
        except WsssError as err:
            notify_error(err)
            return
        region = target.data[y:y + h, x:x + w]
        # erased pixels go back to the map as it was when the region was opened
        new = np.where(self.painted, corrected, core_labels(region, target.metadata))
        region[...] = to_layer(new) if is_layer_encoded(target.metadata) else new
        target_rec = LayerRecord.find(target)
        if target_rec is not None:
            target_rec.replace(edit_store=self.store).store(target)
        target.refresh()
        self.flush()
        self.status.setText(f"written back into '{name}'; "
                            f"{int(edited.sum())} corrected px saved")

    def corrected(self) -> tuple[np.ndarray, np.ndarray]:
        """The Correction layer's region in core labels (erased pixels show the map they were
        opened with) and the bitmap of pixels that hold a correction now."""
        layer = self.correction_layer
        if layer is None or self.painted is None:
            raise WsssError("nothing corrected: use 'Edit region' first")
        values = np.asarray(layer.data)
        core = from_layer(values)
        edited = self.painted & (values != LAYER_NOTHING)
        return np.where(edited, core, self.base).astype(np.uint8), edited

    def flush(self) -> None:
        """Write pending edits now (before fine-tuning, export or closing)."""
        self._mark_dirty()
        if self.undo_timer.isActive():
            self.undo_timer.stop()
            self._on_undo_timer_timeout()
        if self.autosaver is not None:
            try:
                self.autosaver.flush_now()
            except WsssError as err:
                notify_error(err, "saving edits")

    def _mark(self, y: int, x: int, h: int, w: int) -> None:
        layer = self.correction_layer
        if layer is None or self.autosaver is None:
            return
        sy, sx, _, _ = LayerRecord.from_layer(layer).store_region
        try:
            core = from_layer(layer.data[y:y + h, x:x + w])  # erased (0) -> 255, uncorrected
        except WsssError as err:
            notify_error(err, "saving edits")
            return
        labels = np.where(self.painted[y:y + h, x:x + w], core, UNLABELLED).astype(np.uint8)
        self.autosaver.mark(sy + y, sx + x, h, w, labels, np.ones((h, w), bool))

    def _on_correction_paint(self, event: Any) -> None:
        boxes = [_atom_box(atom) for atom in event.value]
        boxes = [b for b in boxes if b is not None]
        if not boxes or self.painted is None:
            return
        for b in boxes:
            self.painted[b[0]:b[2], b[1]:b[3]] |= b[4]
        # napari emits the paint event before it writes the new labels: save them once the
        # event loop is back (or at the next flush)
        self._dirty.extend(boxes)
        QTimer.singleShot(0, self._mark_dirty)

    def _mark_dirty(self) -> None:
        boxes, self._dirty = self._dirty, []
        if boxes:
            y0, x0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
            y1, x1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
            self._mark(y0, x0, y1 - y0, x1 - x0)

    def _on_correction_set_data(self, event: Any = None) -> None:
        self.undo_timer.start()  # undo/redo: re-save the whole region once it settles

    def _on_undo_timer_timeout(self) -> None:
        if self.painted is not None:
            self._mark(0, 0, *self.painted.shape)

    def _on_edit_clicked(self) -> None:
        self.edit_region()

    def _on_write_clicked(self) -> None:
        self.write_back()

    def _on_browse_clicked(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Folder for edits")
        if path:
            self.project = path

    def _close_store(self) -> None:
        if self.autosaver is not None:
            self.flush()
            try:
                self.autosaver.close()
            except WsssError as err:
                notify_error(err, "saving edits")
            self.autosaver = None

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        self._close_store()
        self.finetune.close_jobs()
        super().closeEvent(event)


def _atom_box(atom: Any) -> tuple[int, int, int, int, np.ndarray] | None:
    """Box ``(y0, x0, y1, x1, changed)`` of one napari paint history atom."""
    key = getattr(atom, "slice_key", None)
    if key is not None:  # a masked paint atom: a box and an optional mask inside it
        sy, sx = key[-2], key[-1]
        h, w = sy.stop - sy.start, sx.stop - sx.start
        mask = getattr(atom, "mask", None)
        changed = np.ones((h, w), bool) if mask is None else np.asarray(mask, bool).reshape(h, w)
        return sy.start, sx.start, sy.stop, sx.stop, changed
    if isinstance(atom, tuple) and len(atom) == 3:
        iy, ix = (np.asarray(a) for a in atom[0][-2:])
        if iy.size == 0:
            return None
        y0, x0, y1, x1 = int(iy.min()), int(ix.min()), int(iy.max()) + 1, int(ix.max()) + 1
        changed = np.zeros((y1 - y0, x1 - x0), bool)
        changed[iy - y0, ix - x0] = True
        return y0, x0, y1, x1, changed
    return None
