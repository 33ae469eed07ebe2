"""A patch's image-level labels: parsed from its file name or from a CSV, and the folder listing.

Labels are in the WSSS4LUAD training layout ``<anything>-[tumor, stroma, normal].png``, or in a
``file,labels`` CSV; see :mod:`wsss_napari.train.data` for the checks and datasets built on them.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from .. import WsssError
from ..classes import CLASS_NAMES

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
#: ``[1, 0, 1]`` at the end of a file stem, spaces optional.
_LABEL_RE = re.compile(r"\[\s*([^\[\]]*?)\s*\]\s*$")


@dataclass(frozen=True)
class Problem:
    """Why one file (or the data set as a whole, ``path=None``) cannot be used."""

    path: Path | None
    reason: str

    def __str__(self) -> str:
        return f"{self.path if self.path is not None else '<data set>'}: {self.reason}"


def parse_labels(text: str, n_classes: int = len(CLASS_NAMES)) -> tuple[int, ...]:
    """Parse a multi-label: ``'[1, 0, 1]'``, ``'1,0,1'``, ``'1 0 1'`` or ``'tumor;normal'``.

    Raises:
        WsssError: when the text is not ``n_classes`` flags of 0/1 nor known class names.
    """
    t = text.strip().strip("[]()").strip()
    parts = [p for p in re.split(r"[\s,;|]+", t) if p]
    if parts and all(p in ("0", "1") for p in parts):
        if len(parts) != n_classes:
            raise WsssError(
                f"label '{text}' has {len(parts)} flags; expected {n_classes} "
                f"({', '.join(CLASS_NAMES)})"
            )
        return tuple(int(p) for p in parts)
    names = [p.lower() for p in parts]
    if names and all(n in CLASS_NAMES for n in names):
        return tuple(int(c in names) for c in CLASS_NAMES)
    raise WsssError(
        f"label '{text}' is neither {n_classes} flags of 0/1 like '[1, 0, 1]' nor class names "
        f"from {', '.join(CLASS_NAMES)}"
    )


def labels_from_filename(path: str | Path) -> tuple[int, ...]:
    """Labels of a patch in the challenge layout ``<anything>-[1, 0, 1].png``.

    Raises:
        WsssError: when the name carries no ``[..]`` label or a malformed one.
    """
    stem = Path(path).stem
    m = _LABEL_RE.search(stem)
    if m is None:
        raise WsssError(
            f"file name '{Path(path).name}' has no label; expected '<name>-[tumor, stroma, normal]"
            f"{Path(path).suffix}', e.g. 'patch-[1, 0, 1].png'"
        )
    return parse_labels(m.group(1))


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name (hidden files skipped)."""
    d = Path(folder)
    if not d.is_dir():
        raise WsssError(f"data folder '{d}' does not exist or is not a folder")
    return sorted(
        p for p in d.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )


def read_csv_labels(csv_path: str | Path, root: str | Path | None = None
                    ) -> tuple[list[tuple[Path, str]], list[Problem]]:
    """Rows ``file,labels`` of a CSV (header optional); paths relative to ``root`` or the CSV."""
    p = Path(csv_path)
    base = Path(root) if root is not None else p.parent
    try:
        text = p.read_text(encoding="utf-8-sig")
    except OSError as err:
        raise WsssError(f"cannot read label CSV '{p}': {err.strerror or err}") from err
    rows: list[tuple[Path, str]] = []
    problems: list[Problem] = []
    for i, row in enumerate(csv.reader(text.splitlines()), start=1):
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        if i == 1 and row[0].strip().lower() in ("file", "filename", "path", "image"):
            continue
        if len(row) < 2:
            problems.append(Problem(p, f"line {i}: expected 'file,labels', got {row!r}"))
            continue
        f = Path(row[0].strip())
        rows.append((f if f.is_absolute() else base / f, ",".join(row[1:])))
    return rows, problems
