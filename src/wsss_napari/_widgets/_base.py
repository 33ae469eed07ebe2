"""What the job widgets share: a form over run / progress / status, a region choice, and the
"resolve the layer, else refuse in one notification" prologue. Thin Qt wiring only.

A :class:`JobWidget` runs one core generator at a time through a
:class:`~._worker.JobRunner`: subclasses fill :attr:`JobWidget.fields` (a form), call
:meth:`JobWidget.finish_layout`, and implement ``run()``, which the run button calls. Their
actions are decorated with :func:`refusable`, so a bad choice (a :class:`WsssError`) becomes
one napari notification and ``None`` instead of an exception in a Qt slot.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLayout,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from .. import WsssError
from ..layer_record import LayerRecord
from ._layers import install_lifecycle
from ._worker import JobRunner, notify_error


def button(text: str, tip: str | None = None, slot: Callable[..., Any] | None = None
           ) -> QPushButton:
    """A push button with its tooltip and click handler (the three lines every widget wrote)."""
    b = QPushButton(text)
    if tip:
        b.setToolTip(tip)
    if slot is not None:
        b.clicked.connect(slot)
    return b


def status_label(text: str = "") -> QLabel:
    """A word-wrapped status line."""
    label = QLabel(text)
    label.setWordWrap(True)
    return label


def row(*widgets: QWidget) -> QHBoxLayout:
    """Widgets side by side (a path field and its "…" button, a run and a cancel button)."""
    layout = QHBoxLayout()
    for w in widgets:
        layout.addWidget(w)
    return layout


def require_layer(combo: Any, missing: str) -> Any:
    """The layer chosen in a :class:`~._layers.LayerCombo`, or ``WsssError(missing)``: what
    to do first, in the user's words."""
    layer = combo.layer
    if layer is None:
        raise WsssError(missing)
    return layer


def refusable(action: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a widget action: a ``WsssError`` (a refused choice) becomes one notification
    and the action returns ``None``, as the widgets' public ``run()`` methods promise."""

    @functools.wraps(action)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return action(*args, **kwargs)
        except WsssError as err:
            notify_error(err)
            return None

    return wrapper


class JobWidget(QWidget):
    """A dock widget that runs one core job at a time.

    Makes :attr:`viewer`, :attr:`fields` (the form), :attr:`run_button` (calls ``run()``),
    an optional :attr:`cancel_button`, :attr:`bar`, :attr:`status` and :attr:`runner`, and
    quits the job when the widget closes.
    """

    def __init__(self, napari_viewer: Any, run_text: str, run_tip: str, *,
                 cancel_tip: str | None = None, lifecycle: bool = True) -> None:
        super().__init__()
        self.viewer = napari_viewer
        if lifecycle:
            install_lifecycle(napari_viewer)
        self.fields = QFormLayout()
        self.run_button = button(run_text, run_tip, self._on_run_clicked)
        self.cancel_button = None if cancel_tip is None else button("Cancel", cancel_tip)
        self.bar = QProgressBar()
        self.status = status_label()
        self.runner = JobRunner(self.run_button, self.cancel_button, self.bar, self.status)

    def finish_layout(self, *above_run: QWidget | QLayout, below: tuple = ()) -> None:
        """Stack the form, ``above_run``, the run (and cancel) button, the bar, the status and
        ``below``, top to bottom."""
        layout = QVBoxLayout(self)
        layout.addLayout(self.fields)
        buttons = (self.run_button,) if self.cancel_button is None else (
            self.run_button, self.cancel_button)
        for item in (*above_run, row(*buttons) if len(buttons) > 1 else self.run_button,
                     self.bar, self.status, *below):
            if isinstance(item, QLayout):
                layout.addLayout(item)
            else:
                layout.addWidget(item)
        layout.addStretch(1)

    def run(self) -> Any:
        """Start the job with the current choices; the worker, or ``None`` if refused."""
        raise NotImplementedError

    def _on_run_clicked(self) -> None:
        self.run()

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        self.runner.close()
        super().closeEvent(event)


class RegionChoice:
    """Mixin: a combo box of :attr:`REGIONS` (field of view, whole slide ...) behind the
    :attr:`region_mode` property that tests and scripts set."""

    REGIONS: tuple[str, ...] = ()
    region_combo: QComboBox

    def make_region_combo(self, tip: str) -> QComboBox:
        self.region_combo = QComboBox()
        self.region_combo.addItems(self.REGIONS)
        self.region_combo.setToolTip(tip)
        return self.region_combo

    @property
    def region_mode(self) -> str:
        return self.region_combo.currentText()

    @region_mode.setter
    def region_mode(self, value: str) -> None:
        if value not in self.REGIONS:
            raise WsssError(f"region must be one of {self.REGIONS}")
        self.region_combo.setCurrentText(value)


class EditsFolder:
    """Mixin: the "Edits folder" field of the review widgets behind the :attr:`project`
    property (empty = the edits go next to the slide), for :func:`open_edit_store`."""

    project_edit: QLineEdit

    def make_project_edit(self, tip: str) -> QLineEdit:
        self.project_edit = QLineEdit("")
        self.project_edit.setPlaceholderText("next to the slide")
        self.project_edit.setToolTip(tip)
        return self.project_edit

    @property
    def project(self) -> str | None:
        return self.project_edit.text().strip() or None

    @project.setter
    def project(self, value: str | Path | None) -> None:
        self.project_edit.setText(str(value or ""))


def open_edit_store(meta: LayerRecord, mask_shape: tuple[int, int], project: str | None):
    """The slide's edit store (created on first use) at the tissue map's resolution."""
    from ..corrections.store import EditStore, edits_path, slide_identity

    slide, d = meta.slide, float(meta.geometry.downsample)
    path = getattr(slide, "path", None)
    name = getattr(slide, "name", None) or meta.source or "slide"
    if project:
        root = edits_path(path or Path(project) / name, project)
    elif path is not None:
        root = edits_path(path)
    else:
        raise WsssError("this slide has no file: choose a project folder for the edits")
    ident = slide_identity(path, name=name, mpp=getattr(slide, "mpp", None))
    full = slide.shape if slide is not None else mask_shape
    shape = (math.ceil(full[0] / d), math.ceil(full[1] / d))
    return EditStore.open_or_create(root, ident, shape=shape, downsample=d)
