"""Parameters of what leaves a map: the review queue's uncertainty, exports, provenance."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .. import WsssError, __version__
from .base import ParamsBase, _f


class UncertaintyMetric(StrEnum):
    """Per-pixel uncertainty of the class maps (``wsss_napari.uncertainty``)."""

    MARGIN = "margin"
    ENTROPY = "entropy"
    DISAGREEMENT = "disagreement"


class QueueScore(StrEnum):
    """How review-queue items are ranked (``review_queue.build_queue``)."""

    MEAN = "mean"
    EXPECTED_GAIN = "expected_gain"


class QueueMode(StrEnum):
    """Review-queue items: connected uncertain regions (cut on a tile grid) or whole tiles."""

    REGION = "region"
    TILE = "tile"


@dataclass(frozen=True)
class UncertaintyParams(ParamsBase):
    """Uncertainty map and review queue (``wsss_napari.uncertainty``, ``review_queue``).

    Sizes in px are pixels at the model's resolution, as in :class:`PostprocParams`.
    """

    metric: UncertaintyMetric = _f(
        UncertaintyMetric.ENTROPY, "entropy: normalised entropy; margin: 1 - (p1 - p2); "
        "disagreement: share of scales whose class differs (needs --keep-scales CAMs)")
    bg_exponent: float = _f(8.0, "y in the background probability (1 - max_c CAM)^y",
                            (0.0, 128.0))
    mode: QueueMode = _f(QueueMode.REGION, "queue items: uncertain regions or tiles")
    threshold: float = _f(0.5, "region mode: pixels above this uncertainty form regions",
                          (0.0, 1.0))
    tile: int = _f(256, "tile edge (model px); regions are also cut on this grid", (8, 16384))
    min_area: int = _f(400, "smallest queue item (model px)", (0, 100_000_000))
    max_items: int = _f(200, "longest queue; 0 = no limit", (0, 1_000_000))
    score: QueueScore = _f(
        QueueScore.EXPECTED_GAIN, "ranking: expected_gain: expected mIoU gain of correcting "
        "the item per area (expected wrong pixels, rare classes weighted up); mean: mean "
        "uncertainty of the item")

    def validate(self) -> None:
        self._coerce_enum("metric", UncertaintyMetric)
        self._coerce_enum("mode", QueueMode)
        self._coerce_enum("score", QueueScore)


class ExportFormat(StrEnum):
    """File formats of ``wsss_napari.io.export``."""

    OME_TIFF = "ome-tiff"
    PNG = "png"
    GEOJSON = "geojson"
    RLE = "rle"


class GeoJsonGroup(StrEnum):
    """GeoJSON features: one Polygon per connected region, or one MultiPolygon per class."""

    REGION = "region"
    CLASS = "class"


@dataclass(frozen=True)
class ExportParams(ParamsBase):
    """How a corrected mask is written (``wsss_napari.io.export``)."""

    format: ExportFormat = _f(ExportFormat.OME_TIFF, "ome-tiff, png, geojson or rle")
    tile: int = _f(512, "OME-TIFF tile edge (px); also the pyramid's smallest level", (64, 4096))
    simplify: float = _f(
        1.0, "GeoJSON outline simplification tolerance in mask px; 0 = exact pixel outlines",
        (0.0, 100.0),
    )
    geojson_group: GeoJsonGroup = _f(
        GeoJsonGroup.REGION, "GeoJSON: one feature per connected region, or one per class"
    )
    geojson_background: bool = _f(False, "GeoJSON: also write polygons of the background class")
    rle_order: str = _f("F", "RLE pixel order: F = top-to-bottom then left-to-right "
                             "(column-major, Kaggle), C = row-major")

    def validate(self) -> None:
        self._coerce_enum("format", ExportFormat)
        self._coerce_enum("geojson_group", GeoJsonGroup)
        if self.rle_order not in ("F", "C"):
            raise WsssError(f"rle_order must be 'F' (column-major) or 'C' (row-major), "
                            f"not {self.rle_order!r}")


def _as_applied(p: ParamsBase, mask_from: str) -> ParamsBase:
    """The parameters as they took effect: the epithelium prior and the regional vote apply
    to segmentation models' masks only, and the prior is skipped where its package is not
    installed; the record then says 0."""
    from .maps import CamParams

    if not isinstance(p, CamParams):
        return p
    if mask_from == "cam" and p.context_um > 0:
        p = p.replace(context_um=0.0)
    if p.epithelium > 0:
        from ..epithelium import epithelium_available

        if mask_from == "cam" or epithelium_available():
            return p.replace(epithelium=0.0)
    return p


def _utc_now() -> str:
    import datetime as _dt

    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class RunRecord:
    """Provenance of a result: what made it, written beside every export and into metadata."""

    tool: str = "wsss-napari"
    version: str = __version__
    created: str = field(default_factory=_utc_now)
    model_name: str = ""
    model_hash: str = ""
    #: Which model made the mask: ``'seg'`` (segmentation model) or ``'cam'`` (CAMs +
    #: post-processing); ``''`` for records of other results.
    mask_from: str = ""
    slide: str = ""
    slide_mpp: float | None = None
    params: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def make(cls, *params: ParamsBase, **kw: Any) -> RunRecord:
        applied = (_as_applied(p, kw.get("mask_from", "")) for p in params)
        return cls(params={p.key(): p.to_dict() for p in applied}, **kw)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

