"""What every export format shares: the mask and geometry checks and the provenance sidecar."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...params import ExportFormat, RunRecord
from ...region import MaskGeometry
from ..atomic import atomic_write_text
from ..masks import as_label_array

as_mask = as_label_array


def sidecar_path(out: str | os.PathLike) -> Path:
    """``<out>.run.json``: where the provenance of an export is written."""
    return Path(f"{out}.run.json")


def colors(palette: Sequence[Sequence[int]], n: int) -> list[list[int]]:
    """``n`` RGB colours (grey past the end of ``palette``)."""
    return [list(map(int, palette[i])) if i < len(palette) else [128, 128, 128]
            for i in range(n)]


def finish(out: Path, record: RunRecord | None, info: dict[str, Any]) -> Path:
    """Write the sidecar; if that fails, remove ``out`` too (no export without provenance)."""
    rec = record or RunRecord()
    data = rec.to_dict()
    data["params"] = {**data.get("params", {}), "export": info}
    try:
        atomic_write_text(sidecar_path(out), json.dumps(data, indent=2, sort_keys=True))
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    return out


def require_geometry(geometry: MaskGeometry | None) -> MaskGeometry:
    """The mask's geometry, or a ``WsssError``: a mask is never exported at a guessed place."""
    from ... import WsssError

    if geometry is None:
        raise WsssError("the mask's geometry (where it lies on the slide: origin, downsample) "
                        "is unknown; state it (CLI: --downsample D --region-origin Y X, or "
                        "--assume-level0)")
    if not isinstance(geometry, MaskGeometry):
        raise WsssError(f"geometry must be a MaskGeometry, not {type(geometry).__name__}")
    return geometry


def export_info(fmt: ExportFormat, mask: Any, geometry: MaskGeometry,
                class_names: Sequence[str], **extra: Any) -> dict[str, Any]:
    """The ``params.export`` entry of the sidecar."""
    return {"format": fmt.value, "mask_shape": [int(s) for s in mask.shape],
            "geometry": geometry.to_dict(), "class_names": list(class_names), **extra}
