"""Parameters of the maps: class activation maps, their post-processing, per-cell read-out."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from .. import WsssError
from .base import ParamsBase, _f


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
    stride: int = _f(0, "stride between crops; 0 = three quarters of the crop for CAMs "
                     "(chosen by measurement, docs/cam.md), half a window for segmentation "
                     "models", (0, 4096))
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
    epithelium: float = _f(1.0, "segmentation models: weight of the epithelium prior (SHELL, "
                           "package lavlab-shell) that reassigns tissue between tumor (epithelial) "
                           "and stroma / normal; 0 = off; without the package it is skipped "
                           "with a warning", (0.0, 16.0))
    air_threshold: float = _f(0.4, "with the epithelium prior: the fraction of glass within "
                              "383 um above which tissue is taken for normal lung (alveoli, "
                              "wsss_napari.airiness); 0 = without it", (0.0, 1.0))
    context_um: float = _f(0.0, "segmentation models: decide normal lung versus stroma by "
                           "the region, a Gaussian of this sigma in microns (e.g. 128; "
                           "wsss_napari.airiness.regional_vote; off by default: it gains only "
                           "with the right air threshold, docs/training.md); 0 = pixel by pixel",
                           (0.0, 2048.0))

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


def _check_tta(spec: str) -> None:
    name, _, extra = str(spec).partition("+")  # == inference.tta.parse_tta (torch-free here)
    if name not in ("none", "hflip", "flips", "rot90", "d4") or extra not in ("", "scales"):
        raise WsssError(f"tta must be none, hflip, flips, rot90 or d4, optionally with "
                        f"'+scales', not {spec!r}")


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
