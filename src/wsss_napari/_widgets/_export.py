"""Export widget: write a tissue map in the formats pathologists and pipelines use.

Each format goes through :func:`wsss_napari.io.export.export_mask` (atomic writes plus a
``<file>.run.json`` with the parameters and model hash), in a worker so that a large
OME-TIFF does not freeze the viewer; a failure is one notification and leaves no partial file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qtpy.QtWidgets import (
    QCheckBox,
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
from ..io.formats import FORMATS
from ..params import ExportFormat, ExportParams
from ..progress import Progress
from . import _tooltips as tips
from ._layers import LayerCombo, is_labels_layer, layer_mask
from ._worker import JobRunner, notify_error
from ._writer import export_kwargs


class ExportWidget(QWidget):
    """Dock widget "Export"."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = viewer = napari_viewer
        self.written: list[Path] = []
        self._params = ExportParams()
        self.mask_combo = LayerCombo(viewer, is_labels_layer)
        self.mask_combo.setToolTip(tips.EXPORT["mask"])
        self.mask_combo.currentIndexChanged.connect(self._on_mask_changed)
        self.folder_edit = QLineEdit(str(Path.home() / "wsss-exports"))
        self.folder_edit.setToolTip(tips.EXPORT["folder"])
        browse = QPushButton("…")
        browse.clicked.connect(self._on_browse_clicked)
        folder_row = QHBoxLayout()
        folder_row.addWidget(self.folder_edit)
        folder_row.addWidget(browse)
        self.name_edit = QLineEdit("")
        self.checks: dict[ExportFormat, QCheckBox] = {}
        fmt_row = QHBoxLayout()
        for fmt, spec in FORMATS.items():
            box = QCheckBox(spec.label)
            box.setChecked(True)
            box.setToolTip(tips.EXPORT["formats"])
            self.checks[fmt] = box
            fmt_row.addWidget(box)
        self.run_button = QPushButton("Export")
        self.run_button.setToolTip(tips.EXPORT["run"])
        self.run_button.clicked.connect(self._on_run_clicked)
        self.bar = QProgressBar()
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.runner = JobRunner(self.run_button, None, self.bar, self.status)

        form = QFormLayout()
        form.addRow("Tissue map", self.mask_combo)
        form.addRow("Folder", folder_row)
        form.addRow("File name", self.name_edit)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(fmt_row)
        layout.addWidget(self.run_button)
        layout.addWidget(self.bar)
        layout.addWidget(self.status)
        layout.addStretch(1)
        self._on_mask_changed()

    @property
    def params(self) -> ExportParams:
        """Export settings (tile size, GeoJSON simplification ...); the format is per file."""
        return self._params

    @params.setter
    def params(self, value: ExportParams) -> None:
        self._params = value

    @property
    def formats(self) -> tuple[ExportFormat, ...]:
        return tuple(f for f, box in self.checks.items() if box.isChecked())

    @formats.setter
    def formats(self, value: tuple[ExportFormat | str, ...]) -> None:
        wanted = {ExportFormat(v) for v in value}
        for f, box in self.checks.items():
            box.setChecked(f in wanted)

    @property
    def folder(self) -> Path:
        return Path(self.folder_edit.text().strip() or ".").expanduser()

    @folder.setter
    def folder(self, value: str | Path) -> None:
        self.folder_edit.setText(str(value))

    def export(self):
        """Write the chosen layer in the chosen formats; returns the worker (None if refused)."""
        try:
            layer = self.mask_combo.layer
            if layer is None:
                raise WsssError("no tissue map to export: compute a pseudo-mask first")
            if not self.formats:
                raise WsssError("choose at least one format")
            name = self.name_edit.text().strip() or layer.name
            mask = layer_mask(layer)  # core labels (0 tumor .. 3 background, 255 none)
            kwargs = export_kwargs(layer.metadata, name)
            jobs = [(fmt, self.folder / f"{name}{FORMATS[fmt].suffix}") for fmt in self.formats]
        except WsssError as err:
            notify_error(err)
            return None
        self.written = []
        params = self.params
        return self.runner.start(lambda: _export_job(mask, jobs, params, kwargs),
                                 self._on_job_returned, "export")

    def _on_job_returned(self, paths: list[Path]) -> None:
        self.written = paths
        self.status.setText("wrote " + ", ".join(p.name for p in paths) + f" in {self.folder}")

    def _on_mask_changed(self, *_: Any) -> None:
        layer = self.mask_combo.layer
        if layer is not None and not self.name_edit.isModified():
            source = layer.metadata.get("wsss", {}).get("source", "")
            stem = Path(source).stem.split(".")[0] if source else ""
            self.name_edit.setText(f"{stem}-{layer.name}".strip("-").replace(" ", "-").lower())

    def _on_browse_clicked(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Export folder", str(self.folder))
        if path:
            self.folder = path

    def _on_run_clicked(self) -> None:
        self.export()

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        self.runner.close()
        super().closeEvent(event)


def _export_job(mask: Any, jobs: list[tuple[ExportFormat, Path]], params: ExportParams,
                kwargs: dict):
    from ..io.export import export_mask

    written = []
    for i, (fmt, path) in enumerate(jobs):
        yield Progress("exporting", i, len(jobs), {"file": path.name[:20]})
        written.append(export_mask(mask, path, params.replace(format=fmt), **kwargs))
    yield Progress("exporting", len(jobs), len(jobs))
    return [Path(p) for p in written]
