"""Which slide an edit store belongs to, and where it lives beside (or away from) the slide."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def slide_identity(path: str | os.PathLike | None = None, name: str | None = None,
                   mpp: float | None = None) -> dict[str, Any]:
    """Identity of a slide recorded in (and checked against) an edit store.

    Args:
        path: the slide file; its resolved path, size and mtime are recorded.
        name: a name for array slides without a file (defaults to the file name).
        mpp: micrometres per pixel at level 0, if known (kept for exports).
    """
    ident: dict[str, Any] = {"name": name or (Path(path).name if path else "array")}
    if path is not None:
        p = Path(path)
        ident["path"] = str(p.resolve())
        try:
            st = p.stat()
            ident["size"] = st.st_size
            ident["mtime"] = st.st_mtime
        except OSError:
            pass
    if mpp is not None:
        ident["mpp"] = float(mpp)
    return ident


def edits_path(slide_path: str | os.PathLike, project_dir: str | os.PathLike | None = None) -> Path:
    """Default store location: ``<slide>.wsss/edits.zarr``, or inside ``project_dir``."""
    sp = Path(slide_path)
    base = Path(project_dir) if project_dir is not None else sp.parent
    return base / f"{sp.name}.wsss" / "edits.zarr"

