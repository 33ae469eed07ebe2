"""Export widget: write a tissue map in the formats pathologists and pipelines use.

Each format goes through :func:`wsss_napari.io.export.export_mask` (atomic writes plus a
``<file>.run.json`` with the parameters and model hash), in a worker so that a large
OME-TIFF does not freeze the viewer; a failure is one notification and leaves no partial file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qtpy.QtWidgets import QCheckBox, QFileDialog, QHBoxLayout, QLineEdit

from .. import WsssError
from ..io.formats import FORMATS
from ..layer_record import LayerRecord
from ..params import ExportFormat, ExportParams
from ..progress import Progress
from . import _tooltips as tips
from ._base import JobWidget, button, refusable, require_layer, row
from ._layers import LayerCombo, is_labels_layer, layer_mask
from ._writer import export_kwargs


class ExportWidget(JobWidget):
    """Dock widget "Export"."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__(napari_viewer, "Export", tips.EXPORT["run"], lifecycle=False)
        viewer = napari_viewer
        self.written: list[Path] = []
        self._params = ExportParams()
        self.mask_combo = LayerCombo(viewer, is_labels_layer)
        self.mask_combo.setToolTip(tips.EXPORT["mask"])
        self.mask_combo.currentIndexChanged.connect(self._on_mask_changed)
        self.folder_edit = QLineEdit(str(Path.home() / "wsss-exports"))
        self.folder_edit.setToolTip(tips.EXPORT["folder"])
        self.name_edit = QLineEdit("")
        self.checks: dict[ExportFormat, QCheckBox] = {}
        fmt_row = QHBoxLayout()
        for fmt, spec in FORMATS.items():
            box = QCheckBox(spec.label)
            box.setChecked(True)
            box.setToolTip(tips.EXPORT["formats"])
            self.checks[fmt] = box
            fmt_row.addWidget(box)

        form = self.fields
        form.addRow("Tissue map", self.mask_combo)
        form.addRow("Folder", row(self.folder_edit, button("…", None, self._on_browse_clicked)))
        form.addRow("File name", self.name_edit)
        self.finish_layout(fmt_row)
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

    @refusable
    def export(self):
        """Write the chosen layer in the chosen formats; returns the worker (None if refused)."""
        layer = require_layer(self.mask_combo,
                              "no tissue map to export: compute a pseudo-mask first")
        if not self.formats:
            raise WsssError("choose at least one format")
        name = self.name_edit.text().strip() or layer.name
        mask = layer_mask(layer)  # core labels (0 tumor .. 3 background, 255 none)
        kwargs = export_kwargs(layer.metadata, name)
        jobs = [(fmt, self.folder / f"{name}{FORMATS[fmt].suffix}") for fmt in self.formats]
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
            rec = LayerRecord.find(layer)
            source = (rec.source if rec is not None else None) or ""
            stem = Path(source).stem.split(".")[0] if source else ""
            self.name_edit.setText(f"{stem}-{layer.name}".strip("-").replace(" ", "-").lower())

    def _on_browse_clicked(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Export folder", str(self.folder))
        if path:
            self.folder = path

    run = export  # what the Export button calls


def _export_job(mask: Any, jobs: list[tuple[ExportFormat, Path]], params: ExportParams,
                kwargs: dict):
    from ..io.export import export_mask

    written = []
    for i, (fmt, path) in enumerate(jobs):
        yield Progress("exporting", i, len(jobs), {"file": path.name[:20]})
        written.append(export_mask(mask, path, params.replace(format=fmt), **kwargs))
    yield Progress("exporting", len(jobs), len(jobs))
    return [Path(p) for p in written]
