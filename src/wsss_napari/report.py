"""Per-slide tissue report: area per class and the tumor-stroma ratio of a label mask.

Areas come from the mask's :class:`~wsss_napari.region.MaskGeometry`: each mask pixel covers
``downsample²`` level-0 pixels, i.e. ``(downsample * mpp)²`` µm². A slide without a known
mpp gets its areas in level-0 pixels only (``area_unit`` says so; the mm² fields are empty).

Tumor-stroma ratio (TSR), as reported here: ``stroma / (tumor + stroma)`` over the whole
analysed region (the slide, or ``--region``), from the mask's tumor and stroma pixels
(normal tissue and background do not count). It is continuous; ``stroma_high`` is the usual
dichotomy ``TSR > 0.5`` (van Pelt et al., 2018, scored there by eye on the most invasive
area in 10 % steps, not over the whole slide). Its prognostic direction in lung
adenocarcinoma is not settled: read it as a measurement, not as a risk score.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .classes import CLASS_NAMES
from .region import MaskGeometry

#: Threshold of the stroma-high flag (stroma / (tumor + stroma) above it).
STROMA_HIGH = 0.5


@dataclass(frozen=True)
class TissueReport:
    """What a slide's mask says about its tissue (see the module docstring).

    Attributes:
        slide: the slide file.
        area_unit: ``'mm2'``, or ``'px'`` when the slide's mpp is unknown.
        area_mm2: class -> area in mm² (``None`` without mpp).
        area_px: class -> area in level-0 pixels.
        tumor_stroma_ratio: ``stroma / (tumor + stroma)``, ``None`` when neither is present.
        stroma_high: ``tumor_stroma_ratio > 0.5`` (``None`` with the ratio).
        mpp: level-0 microns per pixel (``None`` unknown); ``downsample``: of the mask.
        model_hash, params_hash: what made the mask (see ``slide_job.job_hashes``).
        mask_from: ``'seg'`` (a segmentation model made the mask) or ``'cam'`` (CAMs +
            post-processing); ``''`` unknown.
        geometry: the mask's :class:`MaskGeometry` as a dict.
    """

    slide: str
    area_unit: str
    area_mm2: dict[str, float | None]
    area_px: dict[str, float]
    tumor_stroma_ratio: float | None
    stroma_high: bool | None
    mpp: float | None
    downsample: float
    model_hash: str = ""
    params_hash: str = ""
    geometry: dict[str, Any] = field(default_factory=dict)
    mask_from: str = ""
    tsr_definition: str = "stroma / (tumor + stroma) area over the analysed region"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TissueReport:
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in names})

    def row(self) -> dict[str, Any]:
        """Flat columns (the per-slide CSV and the cohort table)."""
        out: dict[str, Any] = {}
        for name in CLASS_NAMES:
            mm2 = self.area_mm2.get(name)
            out[f"{name}_mm2"] = "" if mm2 is None else round(mm2, 6)
        out["tumor_stroma_ratio"] = ("" if self.tumor_stroma_ratio is None
                                     else round(self.tumor_stroma_ratio, 6))
        out["stroma_high"] = "" if self.stroma_high is None else self.stroma_high
        out["area_unit"] = self.area_unit
        for name in CLASS_NAMES:
            out[f"{name}_px"] = round(self.area_px.get(name, 0.0), 3)
        out["mpp"] = "" if self.mpp is None else self.mpp
        out["model_hash"] = self.model_hash
        out["params_hash"] = self.params_hash
        out["mask_from"] = self.mask_from
        return out


def tissue_report(mask: Any, geometry: MaskGeometry, *, slide: str = "", model_hash: str = "",
                  params_hash: str = "", mask_from: str = "",
                  class_names: Sequence[str] = CLASS_NAMES) -> TissueReport:
    """Areas per class and the tumor-stroma ratio of a label mask (labels = class index)."""
    m = np.asarray(mask)
    counts = np.bincount(m.ravel(), minlength=256)
    px0 = geometry.downsample ** 2
    area_px = {n: float(counts[i]) * px0 for i, n in enumerate(class_names)}
    area_mm2 = {n: geometry.area_mm2(int(counts[i])) for i, n in enumerate(class_names)}
    tumor, stroma = area_px.get("tumor", 0.0), area_px.get("stroma", 0.0)
    tsr = stroma / (tumor + stroma) if tumor + stroma > 0 else None
    return TissueReport(
        slide=slide or geometry.slide,
        area_unit="mm2" if geometry.mpp is not None else "px",
        area_mm2=area_mm2, area_px=area_px, tumor_stroma_ratio=tsr,
        stroma_high=None if tsr is None else bool(tsr > STROMA_HIGH),
        mpp=geometry.mpp, downsample=float(geometry.downsample),
        model_hash=model_hash, params_hash=params_hash, geometry=geometry.to_dict(),
        mask_from=mask_from,
    )


def csv_text(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """CSV of ``rows`` (columns: ``columns`` or the first row's keys)."""
    cols = list(columns or (rows[0].keys() if rows else []))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    return buf.getvalue()


def write_report(report: TissueReport, json_path: str | Path, csv_path: str | Path) -> None:
    """The report as JSON and as a one-row CSV (each written atomically)."""
    from .io.atomic import atomic_write_text

    atomic_write_text(json_path, json.dumps(report.to_dict(), indent=2, sort_keys=True))
    atomic_write_text(csv_path, csv_text([{"slide": report.slide, **report.row()}]))
