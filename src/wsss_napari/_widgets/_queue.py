"""Review queue widget: walk the regions where the map is most likely wrong, decide, move on.

Wiring only: the uncertainty map and the ranked queue come from
:mod:`wsss_napari.review_queue` (built from the cached CAMs, no network pass); decisions are
written into the slide's :class:`~wsss_napari.corrections.store.EditStore` (so fine-tuning
learns from them like from painted edits) and the queue with its decisions is saved
atomically beside it after every action, so a restart reopens it where the reviewer was.

Keyboard (viewer-wide): Shift-N next, Shift-P previous, Shift-A accept, Shift-1..4 relabel
as tumor / stroma / normal / background, Shift-X exclude, Shift-B brush.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from qtpy.QtWidgets import (
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from .. import WsssError
from ..classes import LABEL_NAMES
from ..labels_encoding import ENCODING, UNLABELLED, from_layer, layer_value, to_layer
from ..layer_record import LayerRecord
from ..params import UncertaintyParams
from . import _tooltips as tips
from ._base import EditsFolder, open_edit_store, require_layer
from ._layers import (
    LayerCombo,
    install_lifecycle,
    is_cam_layer,
    labels_colormap,
    record_of,
)
from ._paramform import ParamsForm
from ._worker import notify_error

UNCERTAINTY_LAYER = "Uncertainty"
ITEM_LAYER = "Review item"
BRUSH_LAYER = "Queue brush"
#: The view shows this many times the item's size around it.
CONTEXT = 3.0
KEYS = {"next": "Shift-N", "previous": "Shift-P", "accept": "Shift-A", "exclude": "Shift-X",
        "brush": "Shift-B", **{name: f"Shift-{i + 1}" for i, name in enumerate(LABEL_NAMES)}}


class QueueWidget(EditsFolder, QWidget):
    """Dock widget "Review queue"."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = viewer = napari_viewer
        install_lifecycle(viewer)
        self.queue: Any = None
        self.store: Any = None
        self.cams_layer: Any = None

        self.cams_combo = LayerCombo(viewer, is_cam_layer)
        self.cams_combo.setToolTip(tips.QUEUE["cams"])
        self.form = ParamsForm(UncertaintyParams)
        self.build_button = QPushButton("Open / build queue")
        self.build_button.setToolTip(tips.QUEUE["build"])
        self.build_button.clicked.connect(self._on_build_clicked)
        self.rebuild_button = QPushButton("Rebuild")
        self.rebuild_button.setToolTip(tips.QUEUE["rebuild"])
        self.rebuild_button.clicked.connect(self._on_rebuild_clicked)

        self.buttons: dict[str, QPushButton] = {}
        grid = QGridLayout()
        actions = [("previous", "◀ Previous"), ("next", "Next ▶"), ("accept", "Accept"),
                   ("exclude", "Exclude"), ("brush", "Brush")] + \
                  [(n, n.capitalize()) for n in LABEL_NAMES]
        for i, (name, text) in enumerate(actions):
            b = QPushButton(text)
            b.setToolTip(f"{tips.QUEUE.get(name, 'Relabel the region as ' + name)} "
                         f"({KEYS[name]})")
            b.clicked.connect(lambda _=False, n=name: self.act(n))
            grid.addWidget(b, i // 3, i % 3)
            self.buttons[name] = b
        self.item_label = QLabel("")
        self.item_label.setWordWrap(True)
        self.status = QLabel("no queue")

        form = QFormLayout()
        form.addRow("CAMs", self.cams_combo)
        form.addRow("Edits folder", self.make_project_edit(tips.QUEUE["folder"]))
        row = QHBoxLayout()
        row.addWidget(self.build_button)
        row.addWidget(self.rebuild_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.form)
        layout.addLayout(row)
        layout.addLayout(grid)
        layout.addWidget(self.item_label)
        layout.addWidget(self.status)
        layout.addStretch(1)
        for name, key in KEYS.items():
            viewer.bind_key(key, self._key_handler(name), overwrite=True)
        self._set_enabled()

    # -- public API (tests, scripts) -----------------------------------------------------

    @property
    def params(self) -> UncertaintyParams:
        return self.form.params  # type: ignore[return-value]

    @params.setter
    def params(self, p: UncertaintyParams) -> None:
        self.form.params = p

    def open_queue(self, rebuild: bool = False) -> Any:
        """Reopen the slide's saved queue (or build it from the selected CAMs); returns it."""
        from ..review_queue import ReviewQueue, queue_path, slide_queue

        try:
            layer = require_layer(self.cams_combo,
                                  "no CAMs: compute class activation maps (CAM widget) first")
            meta = LayerRecord.from_layer(layer)
            cams = meta.slide_cams
            store = open_edit_store(meta, tuple(cams.cams.shape[-2:]), self.project)
            path = queue_path(store.root)
            old = ReviewQueue.load(path, cams.slide_id) if path.exists() else None
            umap = None
            if old is not None and not rebuild:
                queue = old
            else:
                queue, umap = slide_queue(cams, self.params)
                if old is not None:  # keep the decisions on regions still in the queue
                    ids = {it.id for it in queue.items}
                    queue.decisions = {k: d for k, d in old.decisions.items() if k in ids}
                queue.save(path)
        except WsssError as err:
            notify_error(err)
            return None
        self.queue, self.store, self.cams_layer = queue, store, layer
        self.form.params = queue.params
        self._show_uncertainty(cams, queue, umap)
        self.go()
        return queue

    def go(self, delta: int = 0) -> Any:
        """Move ``delta`` items and bring the item into view; returns it."""
        if self.queue is None:
            return None
        self._commit_brush()
        item = self.queue.step(delta)
        self._save()
        self._show_item(item)
        return item

    def act(self, name: str) -> None:
        """A button or key: previous / next / accept / exclude / brush / a class name."""
        from ..review_queue import ACCEPT, EXCLUDE, RELABEL

        if self.queue is None:
            return
        if name in ("previous", "next"):
            self.go(-1 if name == "previous" else 1)
            return
        item = self.queue.current()
        if item is None:
            return
        if name == "brush":
            self.open_brush()
            return
        try:
            if name == "accept" and not self._commit_brush():
                self.queue.decide(item, ACCEPT, store=self.store)
            elif name == "exclude":
                self._drop_brush()
                self.queue.decide(item, EXCLUDE, store=self.store)
            elif name in LABEL_NAMES:
                self._drop_brush()
                self.queue.decide(item, RELABEL, LABEL_NAMES.index(name), store=self.store)
        except WsssError as err:
            notify_error(err)
            return
        if name == "exclude":
            self.go(0)  # the excluded item left the queue: the next one took its place
        else:
            self.queue.next_pending()
            self._save()
            self._show_item(self.queue.current())

    def open_brush(self) -> Any:
        """A Labels layer over the current item to paint its classes (the layer encoding of
        :mod:`wsss_napari.labels_encoding`: class + 1, 0 = keep)."""
        item = self.queue.current() if self.queue is not None else None
        if item is None:
            return None
        self._drop_brush()
        r0, c0, h, w = item.box
        data = to_layer(np.where(item.mask, item.cls, UNLABELLED))
        scale = np.asarray(self.cams_layer.scale[-2:])
        translate = np.asarray(self.cams_layer.translate[-2:]) + np.array([r0, c0]) * scale
        layer = self.viewer.add_labels(
            data, name=BRUSH_LAYER, scale=tuple(scale), translate=tuple(translate),
            units=tuple(self.cams_layer.units)[-2:], opacity=0.7,
            metadata=LayerRecord(kind="queue_brush", queue_item=item.id,
                                 label_encoding=ENCODING).to_metadata())
        layer.colormap = labels_colormap(background_alpha=0.5)
        layer.mode = "paint"
        layer.selected_label = layer_value(item.cls)
        self.viewer.layers.selection.active = layer
        return layer

    # -- helpers -------------------------------------------------------------------------
    def _commit_brush(self) -> bool:
        """Write a painted brush layer of the current item (as a relabel); True if done."""
        from ..review_queue import RELABEL, write_labels

        if BRUSH_LAYER not in self.viewer.layers or self.queue is None:
            return False
        layer = self.viewer.layers[BRUSH_LAYER]
        item = self.queue.current()
        data = np.asarray(layer.data)
        self._drop_brush()
        rec = record_of(layer)
        if item is None or rec is None or rec.queue_item != item.id or not data.any():
            return False
        try:
            labels = from_layer(data)
            write_labels(self.store, item, labels, self.queue.geometry)
            main = int(np.bincount(labels[labels != 255]).argmax())
            self.queue.decide(item, RELABEL, main)
        except WsssError as err:
            notify_error(err)
        self._save()
        return True

    def _drop_brush(self) -> None:
        if BRUSH_LAYER in self.viewer.layers:
            self.viewer.layers.remove(BRUSH_LAYER)

    def _save(self) -> None:
        try:
            self.queue.save()
        except WsssError as err:
            notify_error(err, "saving the review queue")
        self.status.setText(self.queue.status())
        self._set_enabled()

    def _set_enabled(self) -> None:
        for b in self.buttons.values():
            b.setEnabled(self.queue is not None and self.queue.current() is not None)

    def _show_uncertainty(self, cams: Any, queue: Any, umap: Any = None) -> None:
        from ..uncertainty import slide_uncertainty

        values = (umap or slide_uncertainty(cams, queue.params)).values
        kwargs = {"scale": tuple(self.cams_layer.scale[-2:]),
                  "translate": tuple(self.cams_layer.translate[-2:]),
                  "units": tuple(self.cams_layer.units)[-2:],
                  "colormap": "magma", "contrast_limits": (0.0, 1.0), "opacity": 0.5,
                  "blending": "translucent", "visible": False,
                  "metadata": LayerRecord(kind="uncertainty",
                                          uncertainty=queue.params.metric.value).to_metadata()}
        if UNCERTAINTY_LAYER in self.viewer.layers:
            self.viewer.layers.remove(UNCERTAINTY_LAYER)
        self.viewer.add_image(values, name=UNCERTAINTY_LAYER, **kwargs)

    def _show_item(self, item: Any) -> None:
        self.status.setText(self.queue.status())
        if item is None:
            self.item_label.setText("queue empty")
            return
        d = self.queue.decisions.get(item.id)
        probs = ", ".join(f"{n} {p:.2f}" for n, p in zip(LABEL_NAMES, item.probs, strict=True))
        area = f"{item.area_mm2:.3g} mm²" if item.area_mm2 is not None else \
            f"{item.area_px} px"
        self.item_label.setText(
            f"#{item.rank}: {LABEL_NAMES[item.cls]} (runner-up {LABEL_NAMES[item.runner_up]}), "
            f"{self.queue.score_name.replace('_', ' ')} {item.score:.3g}, {area}; {probs}"
            + (f" — {d.action}" + (f" {LABEL_NAMES[d.label]}" if d.label is not None else "")
               if d else ""))
        # the item's box in world coordinates of the CAM layer (pixel edges)
        r0, c0, h, w = item.box
        scale = np.asarray(self.cams_layer.scale[-2:], float)
        t = np.asarray(self.cams_layer.translate[-2:], float) - scale / 2
        lo = t + np.array([r0, c0]) * scale
        hi = t + np.array([r0 + h, c0 + w]) * scale
        rect = np.array([lo, [lo[0], hi[1]], hi, [hi[0], lo[1]]])
        if ITEM_LAYER in self.viewer.layers:
            self.viewer.layers[ITEM_LAYER].data = [rect]
        else:
            self.viewer.add_shapes([rect], shape_type="rectangle", name=ITEM_LAYER,
                                   units=tuple(self.cams_layer.units)[-2:],
                                   edge_color="yellow", face_color="transparent",
                                   edge_width=float(scale.max()) / 2)
        centre = (lo + hi) / 2
        size = np.maximum(hi - lo, scale) * CONTEXT
        canvas = canvas_size(self.viewer)
        camera = getattr(self.viewer, "scene", self.viewer).camera  # napari >= 0.9: scene
        camera.center = tuple(centre)
        camera.zoom = float(np.min(canvas / size))

    def _key_handler(self, name: str):
        def handler(viewer: Any) -> None:
            self.act(name)

        handler.__name__ = f"review_queue_{name}"
        return handler

    def _on_build_clicked(self) -> None:
        self.open_queue()

    def _on_rebuild_clicked(self) -> None:
        self.open_queue(rebuild=True)

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        if self.queue is not None:
            self._commit_brush()
            self._save()
        for key in KEYS.values():
            self.viewer.bind_key(key, None, overwrite=True)
        super().closeEvent(event)


def canvas_size(viewer: Any) -> np.ndarray:
    """``(height, width)`` of the canvas in screen px (napari's ``viewer.canvas.size``)."""
    size = getattr(getattr(viewer, "canvas", None), "size", None)
    arr = np.asarray(size if size is not None else (600, 800), float).ravel()[-2:]
    return arr if arr.size == 2 and (arr > 1).all() else np.array([600.0, 800.0])
