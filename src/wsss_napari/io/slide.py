"""A whole-slide image opened lazily: pyramid levels as array-likes, its scale and thumbnail.

Why lazy: a 40,000 x 40,000 RGB slide is 4.8 GB decoded. Levels are ``tifffile`` zarr views
(only the tiles a viewer or a model asks for are decoded); level 0 is never read whole. A
big single-level TIFF gets a pyramid computed on demand (:class:`LazyDownsampled`), or
written next to it with :meth:`Slide.build_pyramid_cache`.

Every level looks the same to callers: ``(H, W, 3) uint8``. Grey, 16-bit, float and RGBA
sources are converted per region on read (:mod:`wsss_napari.io.levels`; alpha composited
onto white, :mod:`wsss_napari.io.images`); anything else is refused with a
:class:`SlideError` that names the file. TIFF-family containers are parsed in
:mod:`wsss_napari.io.tiff`.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import WsssError
from .images import to_rgb8
from .levels import (
    ConvertedLevel,
    LazyDownsampled,
    LevelView,
    SlideError,
    check_layout,
    lazy_pyramid,
    tiles_of,
    value_range,
)
from .tiff import ASSOCIATED_NAMES, MPP_RANGE, decode_error, open_tiff

__all__ = [
    "ASSOCIATED_NAMES", "IMAGE_SUFFIXES", "LAZY_PYRAMID_MIN", "MPP_RANGE",
    "PYRAMID_CACHE_SUFFIX", "TIFF_SUFFIXES", "ConvertedLevel", "LazyDownsampled", "LevelView",
    "MppOverride", "Slide", "SlideError", "close_layer_slide", "pyramid_cache_path", "to_rgb8",
]

#: Formats read as one in-memory image (patches, photos).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
#: Formats read through tifffile (:mod:`wsss_napari.io.tiff`).
TIFF_SUFFIXES = (".svs", ".tif", ".tiff", ".btf", ".tf8", ".bif", ".ndpi", ".scn")
#: A single-level image larger than this (px, longer side) gets a lazy pyramid.
LAZY_PYRAMID_MIN = 4096
#: Suffix of the pyramidal copy written by :meth:`Slide.build_pyramid_cache`.
PYRAMID_CACHE_SUFFIX = ".wsss-pyramid.tif"


class Slide:
    """A lazily read, multi-resolution RGB slide (use :meth:`open` or :meth:`from_arrays`).

    Attributes:
        path: the file (None for in-memory arrays).
        levels: ``(H_l, W_l, 3) uint8`` array-likes, level 0 first; read lazily.
        mpp: micrometres per pixel at level 0, or None when the file does not say.
        mpp_source: 'aperio', 'ome', 'tiff-resolution', 'user' or 'unknown'.
        format: short description of the container ('svs', 'ome-tiff', 'tiff', 'png', ...).
        lazy_pyramid: True when levels above 0 are computed on demand.
    """

    def __init__(self, levels: Sequence[Any], mpp: float | None = None, mpp_source: str = "unknown",
                 path: Path | None = None, name: str = "slide", fmt: str = "array",
                 info: dict[str, Any] | None = None, closers: Sequence[Any] = (),
                 thumbnail_source: Any = None):
        if not levels:
            raise SlideError(f"'{name}' has no image levels")
        self.levels = list(levels)
        self.path = path
        self.name = name
        self.format = fmt
        self.mpp = mpp
        self.mpp_source = mpp_source if mpp is not None else "unknown"
        self.details: dict[str, Any] = dict(info or {})
        self.lazy_pyramid = any(isinstance(lv, LazyDownsampled) for lv in self.levels)
        self._closers = list(closers)
        self._thumbnail_source = thumbnail_source
        self.closed = False

    # -- construction -----------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike, use_cache: bool = True,
             mpp: float | None = None) -> Slide:
        """Open a slide or image file lazily.

        Args:
            path: SVS, (OME-/Big)TIFF, or a PNG/JPEG patch.
            use_cache: use a pyramidal copy written by :meth:`build_pyramid_cache` when it is
                newer than the file.
            mpp: level-0 microns per pixel given by the user (``--slide-mpp``), over what the
                file says (:meth:`set_mpp`); ``None``: the file's.

        Raises:
            SlideError: the file is missing, empty, truncated, not an image, of an
                unsupported layout, or needs a codec that is not installed.
        """
        p = Path(path)
        if not p.exists():
            raise SlideError(f"'{p}' does not exist")
        if p.is_dir():
            raise SlideError(f"'{p}' is a folder, not a slide file")
        size = p.stat().st_size
        if size == 0:
            raise SlideError(f"'{p}' is empty (0 bytes)")
        cache = pyramid_cache_path(p)
        if p.suffix.lower() in IMAGE_SUFFIXES:
            slide = _open_image(p)
        elif use_cache and cache.exists() and cache.stat().st_mtime >= p.stat().st_mtime:
            slide = _open_tiff(cache)
            slide.path, slide.name = p, p.name
            slide.details["pyramid_cache"] = str(cache)
        else:
            slide = _open_tiff(p)
        if mpp is not None:
            try:
                slide.set_mpp(mpp)
            except SlideError:
                slide.close()
                raise
        return slide

    @classmethod
    def from_arrays(cls, levels: Sequence[Any] | Any, mpp: float | None = None,
                    name: str = "array") -> Slide:
        """Wrap in-memory (numpy/dask/zarr) levels; grey or RGBA levels are converted lazily."""
        if not isinstance(levels, (list, tuple)):
            levels = [levels]
        views = []
        for lv in levels:
            if lv.ndim == 3 and lv.shape[-1] == 3 and lv.dtype == np.uint8:
                views.append(lv)
            elif lv.ndim in (2, 3):
                axes = "YX" if lv.ndim == 2 else "YXS"
                check_layout(name, lv.dtype, 1 if lv.ndim == 2 else lv.shape[-1])
                views.append(ConvertedLevel(lv, axes, value_range(name, lv, lv.dtype)))
            else:
                raise SlideError(f"'{name}': expected (H, W) or (H, W, C) levels, got {lv.shape}")
        return cls(views, mpp=mpp, mpp_source="user" if mpp else "unknown", name=name)

    def set_mpp(self, mpp: float) -> Slide:
        """Give the level-0 microns per pixel (``--slide-mpp``): ``mpp_source`` becomes
        'user'; returns ``self``.

        Raises:
            SlideError: ``mpp`` is outside the plausible range.
        """
        if not (isinstance(mpp, (int, float)) and MPP_RANGE[0] <= mpp <= MPP_RANGE[1]):
            raise SlideError(f"slide mpp {mpp!r} is not a plausible microns per pixel "
                             f"({MPP_RANGE[0]:g}-{MPP_RANGE[1]:g}; 0.25 = 40x, 0.5 = 20x, "
                             "1.0 = 10x)")
        self.mpp, self.mpp_source = float(mpp), "user"
        return self

    # -- geometry ---------------------------------------------------------------------------

    @property
    def shape(self) -> tuple[int, int]:
        """Level-0 (H, W)."""
        return int(self.levels[0].shape[0]), int(self.levels[0].shape[1])

    @property
    def downsamples(self) -> list[float]:
        """Level-0 size over each level's size (mean of both axes)."""
        h0, w0 = self.shape
        return [((h0 / lv.shape[0]) + (w0 / lv.shape[1])) / 2 for lv in self.levels]

    def level_for_downsample(self, ds: float) -> int:
        """The level with the largest downsample that is still <= ``ds`` (level 0 at worst)."""
        best = 0
        for i, d in enumerate(self.downsamples):
            if d <= ds * 1.001:
                best = i
        return best

    # -- reading ----------------------------------------------------------------------------

    def read_region(self, level: int, y: int, x: int, h: int, w: int) -> np.ndarray:
        """A ``(h, w, 3) uint8`` window of ``level`` at (y, x); pixels outside are white."""
        self._check_open()
        if not 0 <= level < len(self.levels):
            raise SlideError(f"'{self.name}' has no level {level} (it has {len(self.levels)})")
        lv = self.levels[level]
        H, W = lv.shape[:2]
        out = np.full((h, w, 3), 255, np.uint8)
        y0, y1, x0, x1 = max(y, 0), min(y + h, H), max(x, 0), min(x + w, W)
        if y1 > y0 and x1 > x0:
            try:
                out[y0 - y : y1 - y, x0 - x : x1 - x] = np.asarray(lv[y0:y1, x0:x1])
            except WsssError:
                raise
            except Exception as err:  # noqa: BLE001 - decoding errors from any codec
                raise decode_error(self.path or self.name, err) from err
        return out

    def thumbnail(self, max_size: int = 1024) -> np.ndarray:
        """The whole slide, ``uint8 (h, w, 3)`` with its longer side <= ``max_size``.

        Read from the smallest pyramid level that is at least ``max_size`` (or the file's
        thumbnail image when every level is large), never from a large level 0.
        """
        import cv2

        self._check_open()
        H, W = self.shape
        scale = min(1.0, max_size / max(H, W))
        th, tw = max(1, round(H * scale)), max(1, round(W * scale))
        idx = len(self.levels) - 1
        for i in range(len(self.levels) - 1, -1, -1):
            idx = i
            if max(self.levels[i].shape[:2]) >= max(th, tw):
                break
        lv = self.levels[idx]
        if lv.shape[0] * lv.shape[1] > 8192 * 8192 and self._thumbnail_source is not None:
            arr = np.asarray(self._thumbnail_source.asarray())
            src = to_rgb8(arr if arr.ndim == 3 else arr[..., None])
        else:
            src = self.read_region(idx, 0, 0, lv.shape[0], lv.shape[1])
        if src.shape[:2] == (th, tw):
            return src
        return cv2.resize(src, (tw, th), interpolation=cv2.INTER_AREA)

    def info(self) -> dict[str, Any]:
        """Facts about the slide for ``wsss-napari info`` and layer metadata (JSON-able)."""
        return {
            "path": str(self.path) if self.path else None,
            "name": self.name,
            "format": self.format,
            "shape": list(self.shape),
            "levels": [
                {"shape": [int(s) for s in lv.shape[:2]], "downsample": round(d, 4),
                 "lazy": isinstance(lv, LazyDownsampled)}
                for lv, d in zip(self.levels, self.downsamples, strict=True)
            ],
            "mpp": self.mpp,
            "mpp_source": self.mpp_source,
            **self.details,
        }

    # -- pyramid cache ----------------------------------------------------------------------

    def build_pyramid_cache(self, path: str | os.PathLike | None = None, tile: int = 512,
                            quality: int = 90) -> Iterator[Any]:
        """Write a tiled pyramidal JPEG TIFF copy (default: next to the file), as a generator.

        Yields :class:`wsss_napari.progress.Progress` per level and returns the path;
        :meth:`open` then uses the copy automatically while it is newer than the file.
        """
        import tifffile

        from ..progress import Progress
        from .atomic import atomic_path

        self._check_open()
        if path is None:
            if self.path is None:
                raise SlideError("an in-memory slide needs an explicit cache path")
            path = pyramid_cache_path(self.path)
        levels = list(self.levels)
        if len(levels) == 1:
            levels = lazy_pyramid(levels[0], min_size=tile)
        total = sum(math.ceil(lv.shape[0] / tile) * math.ceil(lv.shape[1] / tile) for lv in levels)
        done = 0
        H, W = self.shape
        big = H * W * 3 * 1.34 > 2**31
        with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=big) as tw:
            for i, lv in enumerate(levels):
                tiles = tiles_of(lv, tile)
                kw: dict[str, Any] = {"subifds": len(levels) - 1} if i == 0 else {"subfiletype": 1}
                if self.mpp:
                    ds = H / lv.shape[0]
                    kw.update(resolution=(1e4 / (self.mpp * ds),) * 2, resolutionunit="CENTIMETER")
                tw.write(tiles, shape=lv.shape, dtype=np.uint8, tile=(tile, tile),
                         photometric="rgb", compression="jpeg", compressionargs={"level": quality},
                         metadata=None, software="wsss-napari", **kw)
                done += math.ceil(lv.shape[0] / tile) * math.ceil(lv.shape[1] / tile)
                yield Progress("pyramid", done, total, {"level": i})
        return Path(path)

    # -- lifetime ---------------------------------------------------------------------------

    def close(self) -> None:
        """Release file handles (idempotent)."""
        if self.closed:
            return
        self.closed = True
        for obj in reversed(self._closers):
            try:
                obj.close()
            except Exception:  # noqa: BLE001,S110 - closing must never raise
                pass
        self._closers.clear()

    def _check_open(self) -> None:
        if self.closed:
            raise SlideError(f"'{self.name}' is closed")

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        mpp = f"{self.mpp:.4g} um/px ({self.mpp_source})" if self.mpp else "mpp unknown"
        return f"<Slide {self.name!r} {self.format} {self.shape} levels={len(self.levels)} {mpp}>"


def pyramid_cache_path(path: str | os.PathLike) -> Path:
    """Where :meth:`Slide.build_pyramid_cache` writes the pyramidal copy of ``path``."""
    p = Path(path)
    return p.with_name(p.name + PYRAMID_CACHE_SUFFIX)


class MppOverride:
    """``slide`` seen at a user-given level-0 mpp (the CAM widget's "Slide µm/px"), leaving
    the opened slide (shared by its layer) as it is; everything else is the slide's."""

    def __init__(self, slide: Any, mpp: float) -> None:
        if not MPP_RANGE[0] <= float(mpp) <= MPP_RANGE[1]:
            raise SlideError(f"slide mpp {mpp!r} is not a plausible microns per pixel "
                             f"({MPP_RANGE[0]:g}-{MPP_RANGE[1]:g})")
        self._slide, self.mpp, self.mpp_source = slide, float(mpp), "user"

    def __getattr__(self, name: str) -> Any:
        return getattr(self._slide, name)


def close_layer_slide(metadata: dict[str, Any] | None) -> None:
    """Close the :class:`Slide` a reader stored in a layer's metadata (on layer removal)."""
    slide = (metadata or {}).get("slide")
    if isinstance(slide, Slide):
        slide.close()


def _open_image(p: Path) -> Slide:
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # big, not absurd
            im = Image.open(p)
        with im:
            if im.mode in ("LA", "La"):  # grey + alpha: 2 channels, refused as documented
                check_layout(p.name, np.dtype(np.uint8), 2)
            im.load()
            if im.mode in ("P", "PA", "CMYK", "YCbCr", "1"):
                im = im.convert("RGBA" if "A" in im.mode else "RGB")
            arr = np.asarray(im)
    except UnidentifiedImageError as err:
        raise SlideError(f"'{p}' is not a readable PNG/JPEG image") from err
    except Image.DecompressionBombError as err:
        raise SlideError(f"'{p}' is too large for a PNG/JPEG slide ("
                         + " > ".join(f"{int(n):,}" for n in re.findall(r"\d+", str(err))[:2])
                         + " pixels): convert it to a tiled TIFF pyramid first") from err
    except (OSError, SyntaxError, ValueError) as err:
        raise SlideError(
            f"'{p}' cannot be read: {err}. The file may be damaged or truncated"
        ) from err
    channels = 1 if arr.ndim == 2 else arr.shape[-1]
    check_layout(p.name, arr.dtype, channels)
    if arr.ndim == 2:
        arr = arr[..., None]
    rgb = to_rgb8(arr, value_range(p.name, arr, arr.dtype))
    fmt = "png" if p.suffix.lower() == ".png" else "jpeg"
    return Slide([rgb], path=p, name=p.name, fmt=fmt,
                 info={"compression": fmt, "tile_size": None, "associated": []})




def _open_tiff(p: Path) -> Slide:
    parts = open_tiff(p)
    levels = parts["levels"]
    if len(levels) == 1 and max(levels[0].shape[:2]) > LAZY_PYRAMID_MIN:
        parts["levels"] = lazy_pyramid(levels[0])
    return Slide(**parts)
