"""The export formats, registered in one place.

Each format is one module of this package that defines ``FORMAT`` (its
:class:`~wsss_napari.params.ExportFormat`), ``LABEL`` (the text the Export widget shows),
``SUFFIXES`` (file endings, the default first) and
``write(mask, out, params, *, geometry, record, class_names, palette, image_id) -> Path``.
The CLI's ``--format`` choices (from ``ExportFormat``), the Export widget's check boxes,
File > Save's format-by-ending and ``napari.yaml``'s writer extensions (a test keeps the
static manifest equal to :func:`all_suffixes`) all come from :data:`FORMATS`.

A new format: add its member to ``ExportFormat``, a module here, its name to the import
below, and its endings to the manifest.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from ... import WsssError
from ...params import ExportFormat
from . import geojson, ome_tiff, png, rle


@dataclass(frozen=True)
class FormatSpec:
    """One export format: its name, label, file endings and writer."""

    format: ExportFormat
    label: str
    suffixes: tuple[str, ...]
    write: Callable[..., Path]

    @property
    def suffix(self) -> str:
        """The default file ending."""
        return self.suffixes[0]


def _spec(module: ModuleType) -> FormatSpec:
    return FormatSpec(module.FORMAT, module.LABEL, tuple(module.SUFFIXES), module.write)


#: Every export format, in the order the widget and the help list them.
FORMATS: dict[ExportFormat, FormatSpec] = {
    s.format: s for s in map(_spec, (ome_tiff, png, geojson, rle))}


def all_suffixes() -> tuple[str, ...]:
    """Every file ending an export can have (the manifest's writer extensions)."""
    return tuple(s for spec in FORMATS.values() for s in spec.suffixes)


def format_for_path(path: str | os.PathLike) -> ExportFormat:
    """The export format a file name asks for (``WsssError`` if none matches)."""
    name = Path(path).name.lower()
    for fmt, spec in FORMATS.items():
        if name.endswith(spec.suffixes):
            return fmt
    raise WsssError(f"cannot tell the export format from '{Path(path).name}': use one of "
                    f"{', '.join(all_suffixes())} or pass the format explicitly")
