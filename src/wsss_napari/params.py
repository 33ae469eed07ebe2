"""Parameter objects shared by the CLI, the Python API, the widgets and saved metadata.

Each is a frozen dataclass: defaults live on the fields (never written twice), ``__post_init__``
validates, ``to_dict``/``from_dict`` round-trip through JSON/YAML, and field names are the
names used everywhere (CLI flags use the same names with dashes). Each field's ``metadata``
holds a ``help`` text and, for numbers, a documented ``range`` that the widgets use for
their sliders, and, for strings with a fixed set of values, ``choices`` (validated here,
the CLI's ``choices``, a combo box in the widgets).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from . import WsssError, __version__
from .models.families import FAMILIES, SEG_ARCHS

P = TypeVar("P", bound="ParamsBase")


def _f(default: Any, help: str, range: tuple[float, float] | None = None,
       choices: tuple[str, ...] | None = None, **kw: Any) -> Any:
    meta: dict[str, Any] = {"help": help}
    if range is not None:
        meta["range"] = range
    if choices is not None:
        meta["choices"] = tuple(choices)
    if isinstance(default, (list, dict, set)):
        return field(default_factory=lambda: type(default)(default), metadata=meta, **kw)
    return field(default=default, metadata=meta, **kw)


class ParamsBase:
    """Mixin: validation against documented ranges, dict/JSON/YAML round trips."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            rng = f.metadata.get("range")
            v = getattr(self, f.name)
            choices = f.metadata.get("choices")
            if choices is not None and v not in choices:
                raise WsssError(f"{f.name} must be one of {', '.join(choices)}, not {v!r}")
            if rng is not None and v is not None and (
                    isinstance(v, bool) or not isinstance(v, (int, float))):
                raise WsssError(f"{type(self).__name__}.{f.name}={v!r} is not a number "
                                f"(expected one in [{rng[0]}, {rng[1]}])")
            if rng is not None and isinstance(v, (int, float)) and not isinstance(v, bool):
                lo, hi = rng
                if not (lo <= v <= hi) or (isinstance(v, float) and math.isnan(v)):
                    raise WsssError(f"{type(self).__name__}.{f.name}={v!r} is outside [{lo}, {hi}]")
        self.validate()

    def validate(self) -> None:
        """Extra checks of a subclass (cross-field rules)."""

    def _coerce_enum(self, name: str, enum: type[StrEnum]) -> None:
        """Turn a string field into its ``enum`` member (frozen, so via ``object.__setattr__``)."""
        v = getattr(self, name)
        if not isinstance(v, enum):
            try:
                object.__setattr__(self, name, enum(v))
            except ValueError as err:
                raise WsssError(f"{name} must be one of {[m.value for m in enum]}") from err

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            if isinstance(v, StrEnum):
                v = v.value
            elif isinstance(v, tuple):
                v = list(v)
            elif isinstance(v, Path):
                v = str(v)
            out[f.name] = v
        return out

    @classmethod
    def from_dict(cls: type[P], data: dict[str, Any], strict: bool = True) -> P:
        """Build from a dict; unknown keys raise (``strict``) or are ignored."""
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = set(data) - set(fields)
        if unknown and strict:
            raise WsssError(f"unknown {cls.__name__} parameter(s): {', '.join(sorted(unknown))}")
        kwargs = {}
        for k, v in data.items():
            if k not in fields:
                continue
            default = fields[k].default
            if isinstance(default, tuple) and isinstance(v, list):
                v = tuple(v)
            kwargs[k] = v
        try:
            return cls(**kwargs)
        except TypeError as err:
            raise WsssError(f"bad {cls.__name__} parameters: {err}") from err

    @classmethod
    def from_file(cls: type[P], path: str | Path, strict: bool = False) -> P:
        """Load from a JSON or YAML file (a top-level key named after the class is accepted)."""
        p = Path(path)
        try:
            text = p.read_text()
        except OSError as err:
            raise WsssError(f"cannot read parameter file '{p}': {err.strerror or err}") from err
        try:
            if p.suffix.lower() in (".yaml", ".yml"):
                import yaml

                data = yaml.safe_load(text) or {}
            else:
                data = json.loads(text)
        except Exception as err:  # noqa: BLE001 - any parse error is a user error here
            mark = getattr(err, "problem_mark", None)  # YAML: say where, in one line
            what = getattr(err, "problem", None) or " ".join(str(err).split())
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
            raise WsssError(f"cannot parse parameter file '{p}': {what}{where}") from err
        if not isinstance(data, dict):
            raise WsssError(f"parameter file '{p}' must hold a mapping")
        section = data.get(cls.__name__, data.get(cls.key()))
        if isinstance(section, dict):  # this class's own section: every key must be ours
            data, strict = section, True
        else:  # a flat file: keys of other parameter sets may sit beside ours, typos may not
            known = _known_keys()
            typos = sorted(k for k in data if k not in known)
            if typos:
                raise WsssError(f"unknown parameter(s) in '{p}': {', '.join(map(str, typos))}")
        try:
            return cls.from_dict(data, strict=strict)
        except WsssError as err:
            raise WsssError(f"'{p}': {err}") from err

    @classmethod
    def key(cls) -> str:
        """Short name used as a section key in saved metadata, e.g. 'postproc'."""
        return cls.__name__.removesuffix("Params").lower()

    def replace(self: P, **changes: Any) -> P:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


def _known_keys() -> set[str]:
    """Field names and section keys of every parameter class."""
    known: set[str] = set()
    todo = list(ParamsBase.__subclasses__())
    while todo:
        c = todo.pop()
        todo += c.__subclasses__()
        known |= {c.key(), c.__name__}
        if dataclasses.is_dataclass(c):
            known |= {f.name for f in dataclasses.fields(c)}
    return known


class WhiteMethod(StrEnum):
    """How glass / white background is detected from the RGB image."""

    NONE = "none"
    GREY = "grey"
    SATURATION = "saturation"


@dataclass(frozen=True)
class CamParams(ParamsBase):
    """How class activation maps are computed (multi-scale, tiled)."""

    scales: tuple[float, ...] = _f(
        (0.5, 0.75, 1.0, 1.5, 2.0), "image scales of the multi-scale test"
    )
    crop_size: int = _f(0, "crop size in px at each scale; 0 = the model's input size", (0, 4096))
    stride: int = _f(0, "stride between crops; 0 = half the crop size", (0, 4096))
    flip: bool = _f(False, "also average horizontally flipped crops (test-time augmentation)")
    tta: str = _f("none", "segmentation models: test-time augmentation set none, hflip, flips, "
                  "rot90 or d4, optionally +scales (0.75/1/1.25)")
    batch_size: int = _f(16, "crops per forward pass", (1, 1024))
    tile_size: int = _f(1024, "whole-slide tile edge in px at the model's level", (64, 16384))
    halo: int = _f(0, "minimum context px around each whole-slide tile; always raised to "
                   "the reach of the largest crop, so tiles are seamless", (0, 4096))
    out_stride: int = _f(4, "whole-slide CAMs are stored at 1/out_stride of the model's "
                         "resolution", (1, 64))
    skip_glass: bool = _f(True, "skip whole-slide tiles without tissue")
    min_tissue: float = _f(0.01, "minimum tissue fraction for a tile to be processed", (0.0, 1.0))
    device: str = _f("auto", "auto, cuda, mps or cpu")
    amp: bool = _f(True, "mixed precision on CUDA")
    keep_scales: bool = _f(False, "also keep each scale's maps (for the review queue's "
                           "scale-disagreement uncertainty)")
    threads: int = _f(0, "CPU cores to use; 0 = all this process may run on", (0, 1024))

    def validate(self) -> None:
        if not self.scales or any(not (0.05 <= s <= 8) for s in self.scales):
            raise WsssError(f"scales must be non-empty and within [0.05, 8]: {self.scales}")
        _check_tta(self.tta)
        if self.tile_size % self.out_stride:
            raise WsssError(f"tile_size ({self.tile_size}) must be a multiple of out_stride "
                            f"({self.out_stride})")


@dataclass(frozen=True)
class PostprocParams(ParamsBase):
    """CAM -> pseudo-mask post-processing (see ``wsss_napari.postproc``).

    Sizes in px are pixels at the model's resolution (its training patches'), whatever the
    resolution of the maps they are applied to (``LiveTuner(pixel_scale=...)``).
    """

    bg_exponent: float = _f(8.0, "y in the background channel (1 - max_c CAM)^y", (0.0, 128.0))
    score_threshold: float = _f(
        0.25, "suppress classes whose image-level score is below this; 0 disables", (0.0, 1.0)
    )
    white_method: WhiteMethod = _f(WhiteMethod.GREY, "glass detection: none, grey or saturation")
    white_threshold: float = _f(
        210.0, "grey level above which (grey) or saturation below which (saturation) is glass",
        (0.0, 255.0),
    )
    white_min_size: int = _f(
        64, "glass regions smaller than this (model px) are not glass", (0, 1_000_000)
    )
    area_patch: int = _f(256, "sub-patch size for the minimum-area rule (model px)", (8, 8192))
    min_area_pct: float = _f(
        5.0, "drop a class under this % of a sub-patch; 0 disables", (0.0, 50.0)
    )
    min_region: int = _f(
        200, "regions smaller than this (model px) are relabelled by kNN", (0, 1_000_000)
    )
    knn_k: int = _f(8, "neighbours that vote when relabelling a small region", (1, 64))
    island_rule: bool = _f(True, "small tumor/stroma islands inside normal become normal")
    island_max_size: int = _f(
        2000, "largest island (model px) that the island rule turns into normal", (0, 1_000_000)
    )
    normal_min_size: int = _f(
        0, "normal regions smaller than this (model px) become stroma; 0 disables", (0, 1_000_000)
    )

    def validate(self) -> None:
        self._coerce_enum("white_method", WhiteMethod)


@dataclass(frozen=True)
class TrainClsParams(ParamsBase):
    """Stage 1: the CAM classifier trained from patch-level multi-labels."""

    backbone: str = _f("tf_efficientnet_lite0", "timm backbone name (the default has local "
                       "ImageNet weights and trains on a CPU)")
    epochs: int = _f(6, "training epochs", (1, 10_000))
    batch_size: int = _f(20, "patches per step", (1, 4096))
    lr: float = _f(1e-2, "SGD learning rate (polynomial decay)", (1e-7, 10.0))
    momentum: float = _f(0.9, "SGD momentum", (0.0, 1.0))
    weight_decay: float = _f(1e-4, "SGD weight decay", (0.0, 1.0))
    crop_size: int = _f(224, "training crop size (px)", (16, 4096))
    crop_scale_min: float = _f(0.25, "RandomResizedCrop minimum area scale", (0.01, 1.0))
    rot90: bool = _f(False, "also rotate crops by random multiples of 90 degrees")
    balance: bool = _f(False, "draw patches of rare classes more often (1/sqrt(positives))")
    cutmix: float = _f(0.0, "probability of label-consistent CutMix", (0.0, 1.0))
    mosaic: float = _f(0.0, "probability of a mosaic of single-label patches", (0.0, 1.0))
    stain_jitter: float = _f(0.03, "HED stain jitter strength; 0 disables", (0.0, 0.5))
    puzzle: float = _f(0.0, "Puzzle-CAM: weight of the tile-vs-whole CAM consistency (L1) "
                       "loss, ramped up over the first half; 0 disables", (0.0, 100.0))
    val_fraction: float = _f(0.1, "fraction of patches held out for validation", (0.0, 0.9))
    seed: int = _f(0, "random seed", (0, 2**31 - 1))
    device: str = _f("auto", "auto, cuda, mps or cpu")
    amp: bool = _f(True, "mixed precision on CUDA")
    workers: int = _f(0, "data-loader worker processes", (0, 64))
    pretrained: bool = _f(True, "start from ImageNet weights (offline for efficientnet_lite0 "
                          "and tf_efficientnet_lite0; other backbones download from the hub; "
                          "--no-pretrained: random init)")
    weights: str = _f("", "local timm weights file (safetensors) to initialise the backbone")
    mpp: float = _f(0.0, "microns per pixel of the training patches; 0 = unknown", (0.0, 100.0))
    # issue 11 (SAM): see wsss_napari.train.sam
    optimizer: str = _f("sgd", "sgd, adamw, sam (SAM around SGD) or sam-adamw (two passes a step)")
    sam_rho: float = _f(0.05, "SAM neighbourhood radius rho", (1e-4, 10.0))
    # issue 11 (stain normalisation): see wsss_napari.stain
    stain_norm: str = _f("none", "stain normalisation of the patches: none, reinhard or "
                         "macenko (stored in the model; inference does the same)")
    stain_ref: str = _f("", "reference image or slide of the target stain; '' = the "
                        "training patches' pooled stain")

    def validate(self) -> None:
        _check_optimizer(self.optimizer)
        _check_stain(self.stain_norm)


def _check_optimizer(name: str) -> None:
    choices = ("sgd", "adamw", "sam", "sam-adamw")  # == train.sam.OPTIMIZERS (torch-free here)
    if name not in choices:
        raise WsssError(f"optimizer must be one of {', '.join(choices)}, not {name!r}")


def _check_tta(spec: str) -> None:
    name, _, extra = str(spec).partition("+")  # == inference.tta.parse_tta (torch-free here)
    if name not in ("none", "hflip", "flips", "rot90", "d4") or extra not in ("", "scales"):
        raise WsssError(f"tta must be none, hflip, flips, rot90 or d4, optionally with "
                        f"'+scales', not {spec!r}")


def _check_stain(name: str) -> None:
    choices = ("none", "reinhard", "macenko")  # == stain.METHODS
    if name not in choices:
        raise WsssError(f"stain_norm must be one of {', '.join(choices)}, not {name!r}")


@dataclass(frozen=True)
class TrainSegParams(ParamsBase):
    """Stage 2: a segmentation network trained on pseudo-masks."""

    encoder: str = _f("tf_efficientnet_lite0", "timm encoder name (the train-cls default, so "
                      "--weights CAM_MODEL initialises it)")
    decoder: str = _f("deeplabv3plus", "segmentation decoder: "
                      + "; ".join(f"{f.arch} ({f.summary})" for f in FAMILIES if f.kind == "seg"),
                      choices=SEG_ARCHS)
    epochs: int = _f(20, "training epochs", (1, 10_000))
    batch_size: int = _f(8, "images per step", (1, 4096))
    lr: float = _f(1e-2, "SGD learning rate (polynomial decay)", (1e-7, 10.0))
    crop_size: int = _f(224, "training crop size (px)", (16, 4096))
    blur: float = _f(0.5, "probability of Gaussian blur augmentation", (0.0, 1.0))
    rot90: bool = _f(False, "also rotate crops by random multiples of 90 degrees")
    dice_weight: float = _f(1.0, "weight of the Dice term added to cross-entropy", (0.0, 100.0))
    mosaic: float = _f(0.0, "probability of a 2x2 mosaic of single-label patches with their "
                       "masks (exact multi-class training images)", (0.0, 1.0))
    val_fraction: float = _f(0.1, "fraction held out for validation", (0.0, 0.9))
    seed: int = _f(0, "random seed", (0, 2**31 - 1))
    device: str = _f("auto", "auto, cuda, mps or cpu")
    amp: bool = _f(True, "mixed precision on CUDA")
    workers: int = _f(0, "data-loader worker processes", (0, 64))
    pretrained: bool = _f(False, "start from ImageNet weights (offline for efficientnet_lite0 "
                          "and tf_efficientnet_lite0; other encoders download from the hub)")
    weights: str = _f("", "local timm weights file (safetensors) to initialise the encoder")
    mpp: float = _f(0.0, "microns per pixel of the training patches; 0 = unknown", (0.0, 100.0))
    # issue 11 (SAM): see wsss_napari.train.sam
    optimizer: str = _f("sgd", "sgd, adamw, sam (SAM around SGD) or sam-adamw (two passes a step)")
    sam_rho: float = _f(0.05, "SAM neighbourhood radius rho", (1e-4, 10.0))
    # issue 11 (stain normalisation): see wsss_napari.stain
    stain_norm: str = _f("none", "stain normalisation of the patches: none, reinhard or "
                         "macenko (stored in the model; inference does the same)")
    stain_ref: str = _f("", "reference image or slide of the target stain; '' = the "
                        "training patches' pooled stain")
    # issue 11 (HuBMAP levers)
    loss: str = _f("ce+dice", "ce+dice (softmax) or bce+dice (one-vs-rest sigmoid per class)")

    def validate(self) -> None:
        if self.loss not in ("ce+dice", "bce+dice"):
            raise WsssError(f"loss must be ce+dice or bce+dice, not {self.loss!r}")
        _check_optimizer(self.optimizer)
        _check_stain(self.stain_norm)


@dataclass(frozen=True)
class FinetuneParams(ParamsBase):
    """Background fine-tuning on the pathologist's corrected regions."""

    steps: int = _f(50, "optimisation steps", (1, 100_000))
    lr: float = _f(1e-3, "learning rate (Adam)", (1e-7, 1.0))
    batch_size: int = _f(4, "crops per step", (1, 256))
    crop_size: int = _f(224, "crop size (px)", (16, 4096))
    pseudo_elsewhere: bool = _f(False, "also learn from CAM pseudo-labels outside edited pixels")
    seed: int = _f(0, "random seed", (0, 2**31 - 1))
    device: str = _f("auto", "auto, cuda, mps or cpu")


class UncertaintyMetric(StrEnum):
    """Per-pixel uncertainty of the class maps (``wsss_napari.uncertainty``)."""

    MARGIN = "margin"
    ENTROPY = "entropy"
    DISAGREEMENT = "disagreement"


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

    def validate(self) -> None:
        self._coerce_enum("metric", UncertaintyMetric)
        self._coerce_enum("mode", QueueMode)


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
        return cls(params={p.key(): p.to_dict() for p in params}, **kw)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


@dataclass(frozen=True)
class CellParams(ParamsBase):
    """Per-cell labels (``wsss_napari.cells``): nucleus segmentation and CAM read-out."""

    nucleus_threshold: float = _f(
        0.0, "haematoxylin threshold of a nucleus pixel; 0 = Otsu over the slide's tissue "
        "(once per slide, from its thumbnail)", (0.0, 10.0))
    sigma: float = _f(1.0, "Gaussian smoothing of the haematoxylin channel (px)", (0.0, 10.0))
    min_area: int = _f(30, "smallest nucleus (level-0 px)", (1, 1_000_000))
    max_area: int = _f(1500, "largest nucleus (level-0 px)", (1, 10_000_000))
    min_distance: int = _f(4, "smallest distance between two nucleus centres (watershed "
                           "seeds, px)", (1, 1000))
    dilate: int = _f(0, "grow each nucleus by this many px before averaging its CAMs",
                     (0, 1000))
    tile: int = _f(1024, "tile edge (level-0 px) of whole-slide runs", (64, 16384))
    halo: int = _f(48, "context around each tile (px); at least a nucleus diameter",
                   (0, 1024))

    def validate(self) -> None:
        if self.max_area < self.min_area:
            raise WsssError(f"max_area ({self.max_area}) is below min_area ({self.min_area})")
