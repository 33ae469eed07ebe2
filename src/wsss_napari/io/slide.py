"""A whole-slide image opened lazily: pyramid levels as array-likes, its scale and thumbnail.

Why lazy: a 40,000 x 40,000 RGB slide is 4.8 GB decoded. Levels are ``tifffile`` zarr views
(only the tiles a viewer or a model asks for are decoded); level 0 is never read whole. A
big single-level TIFF gets a pyramid computed on demand (:class:`LazyDownsampled`), or
written next to it with :meth:`Slide.build_pyramid_cache`.

Every level looks the same to callers: ``(H, W, 3) uint8``. Grey, 16-bit, float and RGBA
sources are converted per region on read (:class:`ConvertedLevel`); anything else is refused
with a :class:`SlideError` that names the file.
"""

from __future__ import annotations

import logging
import math
import os
import re
import struct
import threading
import warnings
import xml.etree.ElementTree as ET
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import WsssError

#: Formats read as one in-memory image (patches, photos).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
#: Formats read through tifffile.
TIFF_SUFFIXES = (".svs", ".tif", ".tiff", ".btf", ".tf8", ".bif", ".ndpi", ".scn")
#: Series that are not the slide itself (SVS and friends).
ASSOCIATED_NAMES = ("label", "macro", "thumbnail", "overview")
#: A single-level image larger than this (px, longer side) gets a lazy pyramid.
LAZY_PYRAMID_MIN = 4096
#: Plausible microns per pixel (a 72-dpi tag written by default is not a scan resolution).
MPP_RANGE = (0.01, 50.0)
#: Suffix of the pyramidal copy written by :meth:`Slide.build_pyramid_cache`.
PYRAMID_CACHE_SUFFIX = ".wsss-pyramid.tif"

_UNIT_TO_UM = {"nm": 1e-3, "um": 1.0, "µm": 1.0, "\u03bcm": 1.0, "micron": 1.0, "mm": 1e3,
               "cm": 1e4, "m": 1e6}


class SlideError(WsssError):
    """A slide cannot be opened or read; the message names the file and what to do."""


# ------------------------------------------------------------------------------ level views


def _norm_key(key: Any, ndim: int) -> tuple:
    if not isinstance(key, tuple):
        key = (key,)
    if any(k is Ellipsis for k in key):
        i = next(i for i, k in enumerate(key) if k is Ellipsis)
        key = key[:i] + (slice(None),) * (ndim - len(key) + 1) + key[i + 1 :]
    return key + (slice(None),) * (ndim - len(key))


def _span(k: Any, n: int) -> tuple[int, int, Any]:
    """(start, stop) to read along an axis of length ``n`` and the index to apply after."""
    if isinstance(k, slice):
        start, stop, step = k.indices(n)
        if step < 0:
            return 0, n, k
        stop = max(start, stop)
        return start, stop, slice(0, stop - start, step)
    if isinstance(k, (int, np.integer)):
        i = int(k) + n if k < 0 else int(k)
        if not 0 <= i < n:
            raise IndexError(f"index {k} out of range for axis of length {n}")
        return i, i + 1, 0
    arr = np.asarray(k)
    if arr.dtype == bool:
        arr = np.flatnonzero(arr)
    arr = np.where(arr < 0, arr + n, arr)
    lo, hi = (int(arr.min()), int(arr.max()) + 1) if arr.size else (0, 0)
    return lo, hi, arr - lo


class LevelView:
    """Base of the lazy ``(H, W, 3) uint8`` array-likes: numpy-style indexing reads a region.

    Subclasses implement :meth:`region` (a contiguous window). Works with napari's multiscale
    image layers, ``np.asarray`` and plain slicing.
    """

    dtype = np.dtype(np.uint8)
    ndim = 3
    shape: tuple[int, int, int]

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def nbytes(self) -> int:
        return self.size

    def region(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        raise NotImplementedError

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        ky, kx, kc = _norm_key(key, 3)
        y0, y1, ay = _span(ky, self.shape[0])
        x0, x1, ax = _span(kx, self.shape[1])
        out = self.region(y0, y1, x0, x1)
        if isinstance(ay, np.ndarray) and isinstance(ax, np.ndarray):
            out = out[ay][:, ax]  # orthogonal, like zarr
            return out[..., kc]
        return out[ay, ax, kc]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        arr = self.region(0, self.shape[0], 0, self.shape[1])
        return arr if dtype is None else arr.astype(dtype)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} shape={self.shape}>"


class ConvertedLevel(LevelView):
    """A source array of any supported layout/dtype, seen as ``(H, W, 3) uint8``.

    Args:
        source: zarr/numpy array; ``axes`` names its dimensions (tifffile convention,
            ``Y``, ``X`` and one optional ``S``/``C`` channel axis; others have size 1).
        scale: ``(lo, hi)`` mapped to 0..255 for non-uint8 data (None for uint8).
    """

    def __init__(self, source: Any, axes: str, scale: tuple[float, float] | None = None):
        self.source = source
        self.axes = axes
        self.scale = scale
        self._y, self._x = axes.index("Y"), axes.index("X")
        ch = [i for i, a in enumerate(axes) if a in "SC"]
        self._c = ch[0] if ch else None
        self.channels = source.shape[self._c] if ch else 1
        self.shape = (int(source.shape[self._y]), int(source.shape[self._x]), 3)

    def region(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        key: list[Any] = [0] * len(self.axes)
        key[self._y], key[self._x] = slice(y0, y1), slice(x0, x1)
        if self._c is not None:
            key[self._c] = slice(None)
        arr = np.asarray(self.source[tuple(key)])
        if self._c is None:
            arr = arr[..., None]
        elif self._c < self._y:  # planar (C, Y, X): channels last
            arr = np.moveaxis(arr, 0, -1)
        return to_rgb8(arr, self.scale)


def to_rgb8(arr: np.ndarray, scale: tuple[float, float] | None = None) -> np.ndarray:
    """(h, w, c) with c in 1, 3, 4 and any real dtype -> (h, w, 3) uint8."""
    c = arr.shape[-1]
    if c == 4:
        arr = arr[..., :3]
    elif c == 1:
        arr = np.repeat(arr, 3, axis=-1)
    if arr.dtype != np.uint8:
        lo, hi = scale if scale is not None else (0.0, 255.0)
        f = (arr.astype(np.float32) - lo) * (255.0 / max(hi - lo, 1e-12))
        arr = np.clip(f + 0.5, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


class LazyDownsampled(LevelView):
    """A pyramid level computed on demand from its parent by area averaging.

    Regions are computed per aligned ``chunk`` x ``chunk`` block (reading ``factor``-times
    larger, chunk-aligned windows of the parent) and kept in a small LRU, so panning and
    zooming out on a single-level TIFF stay fast and memory stays bounded.
    """

    def __init__(self, parent: Any, factor: int = 2, chunk: int = 512, cache_chunks: int = 64):
        self.parent = parent
        self.factor = factor
        self.chunk = chunk
        self.cache_chunks = cache_chunks
        ph, pw = parent.shape[:2]
        self.shape = (math.ceil(ph / factor), math.ceil(pw / factor), 3)
        self._cache: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def _chunk(self, cy: int, cx: int) -> np.ndarray:
        import cv2

        with self._lock:
            hit = self._cache.get((cy, cx))
            if hit is not None:
                self._cache.move_to_end((cy, cx))
                return hit
        c, f = self.chunk, self.factor
        y0, x0 = cy * c, cx * c
        h, w = min(c, self.shape[0] - y0), min(c, self.shape[1] - x0)
        ph, pw = self.parent.shape[:2]
        ys = slice(y0 * f, min((y0 + h) * f, ph))
        src = np.asarray(self.parent[ys, x0 * f : min((x0 + w) * f, pw)])
        if src.shape[0] != h * f or src.shape[1] != w * f:  # ragged edge: pad by replication
            src = np.pad(src, ((0, h * f - src.shape[0]), (0, w * f - src.shape[1]), (0, 0)),
                         mode="edge")
        out = cv2.resize(src, (w, h), interpolation=cv2.INTER_AREA)
        with self._lock:
            self._cache[(cy, cx)] = out
            while len(self._cache) > self.cache_chunks:
                self._cache.popitem(last=False)
        return out

    def region(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        out = np.empty((y1 - y0, x1 - x0, 3), np.uint8)
        c = self.chunk
        for cy in range(y0 // c, (y1 - 1) // c + 1 if y1 > y0 else y0 // c):
            for cx in range(x0 // c, (x1 - 1) // c + 1 if x1 > x0 else x0 // c):
                blk = self._chunk(cy, cx)
                by0, bx0 = cy * c, cx * c
                sy0, sy1 = max(y0, by0), min(y1, by0 + blk.shape[0])
                sx0, sx1 = max(x0, bx0), min(x1, bx0 + blk.shape[1])
                out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = blk[sy0 - by0 : sy1 - by0,
                                                                    sx0 - bx0 : sx1 - bx0]
        return out


# ------------------------------------------------------------------------------- metadata


def _mpp_from_tiff(tf: Any, page: Any) -> tuple[float | None, str]:
    """MPP and where it came from: Aperio description, OME XML, then resolution tags."""
    if tf.is_svs:
        from tifffile.tifffile import svs_description_metadata

        try:
            mpp = float(svs_description_metadata(page.description).get("MPP", 0)) or None
        except (ValueError, TypeError):
            mpp = None
        if mpp and MPP_RANGE[0] <= mpp <= MPP_RANGE[1]:
            return mpp, "aperio"
    if tf.is_ome:
        mpp = _mpp_from_ome(tf.ome_metadata or "")
        if mpp is not None:
            return mpp, "ome"
    tags = page.tags
    xres, unit = tags.get("XResolution"), tags.get("ResolutionUnit")
    if xres is not None and unit is not None:
        num, den = xres.value if isinstance(xres.value, tuple) else (xres.value, 1)
        per_unit = num / den if den else 0.0
        um_per_unit = {2: 25400.0, 3: 10000.0}.get(int(unit.value))
        if per_unit > 0 and um_per_unit:
            mpp = um_per_unit / per_unit
            if MPP_RANGE[0] <= mpp <= MPP_RANGE[1]:
                return mpp, "tiff-resolution"
    return None, "unknown"


def _mpp_from_ome(xml: str) -> float | None:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    for el in root.iter():
        if el.tag.endswith("Pixels") and "PhysicalSizeX" in el.attrib:
            try:
                size = float(el.attrib["PhysicalSizeX"])
            except ValueError:
                return None
            unit = el.attrib.get("PhysicalSizeXUnit", "µm")
            factor = _UNIT_TO_UM.get(unit)
            if factor is None or size <= 0:
                return None
            mpp = size * factor
            return mpp if MPP_RANGE[0] <= mpp <= MPP_RANGE[1] else None
    return None


# ----------------------------------------------------------------------------------- slide


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
    def open(cls, path: str | os.PathLike, use_cache: bool = True) -> Slide:
        """Open a slide or image file lazily.

        Args:
            path: SVS, (OME-/Big)TIFF, or a PNG/JPEG patch.
            use_cache: use a pyramidal copy written by :meth:`build_pyramid_cache` when it is
                newer than the file.

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
        if p.suffix.lower() in IMAGE_SUFFIXES:
            return _open_image(p)
        cache = pyramid_cache_path(p)
        if use_cache and cache.exists() and cache.stat().st_mtime >= p.stat().st_mtime:
            slide = _open_tiff(cache)
            slide.path, slide.name = p, p.name
            slide.details["pyramid_cache"] = str(cache)
            return slide
        return _open_tiff(p)

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
                _check_layout(name, lv.dtype, 1 if lv.ndim == 2 else lv.shape[-1])
                views.append(ConvertedLevel(lv, axes, _value_range(name, lv, lv.dtype)))
            else:
                raise SlideError(f"'{name}': expected (H, W) or (H, W, C) levels, got {lv.shape}")
        return cls(views, mpp=mpp, mpp_source="user" if mpp else "unknown", name=name)

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
                raise _decode_error(self.path or self.name, err) from err
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
            levels = _lazy_pyramid(levels[0], min_size=tile)
        total = sum(math.ceil(lv.shape[0] / tile) * math.ceil(lv.shape[1] / tile) for lv in levels)
        done = 0
        H, W = self.shape
        big = H * W * 3 * 1.34 > 2**31
        with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=big) as tw:
            for i, lv in enumerate(levels):
                tiles = _tiles_of(lv, tile)
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


def close_layer_slide(metadata: dict[str, Any] | None) -> None:
    """Close the :class:`Slide` a reader stored in a layer's metadata (on layer removal)."""
    slide = (metadata or {}).get("slide")
    if isinstance(slide, Slide):
        slide.close()


# -------------------------------------------------------------------------------- helpers


def _tiles_of(level: Any, tile: int) -> Iterator[np.ndarray]:
    H, W = level.shape[:2]
    for y in range(0, H, tile):
        for x in range(0, W, tile):
            blk = np.asarray(level[y : y + tile, x : x + tile])
            if blk.shape[:2] != (tile, tile):
                full = np.full((tile, tile, 3), 255, np.uint8)
                full[: blk.shape[0], : blk.shape[1]] = blk
                blk = full
            yield blk


def _lazy_pyramid(level0: Any, min_size: int = 1024) -> list[Any]:
    levels = [level0]
    while max(levels[-1].shape[:2]) > min_size:
        levels.append(LazyDownsampled(levels[-1], factor=2))
    return levels


def _check_layout(name: str, dtype: np.dtype, channels: int) -> None:
    dtype = np.dtype(dtype)
    if dtype.kind not in "uif" or dtype.itemsize > 8:
        raise SlideError(
            f"'{name}' has pixel type {dtype}, which cannot be shown as a slide "
            "(supported: 8/16/32-bit integers and float images in 0..1 or 0..255)"
        )
    if channels not in (1, 3, 4):
        raise SlideError(
            f"'{name}' has {channels} channels; a slide must be grey (1), RGB (3) or RGBA (4). "
            "Multiplexed/fluorescence images are not supported by this plugin"
        )


def _value_range(name: str, arr: Any, dtype: np.dtype) -> tuple[float, float] | None:
    """Intensity range mapped to 0..255 for non-uint8 data, from a small sample."""
    dtype = np.dtype(dtype)
    if dtype == np.uint8:
        return None
    sample = _sample(arr)
    if dtype.kind == "f":
        finite = sample[np.isfinite(sample)]
        if finite.size == 0:
            raise SlideError(f"'{name}' holds no finite values")
        lo, hi = float(finite.min()), float(finite.max())
        if lo >= 0 and hi <= 1.0:
            return 0.0, 1.0
        if lo >= 0 and hi <= 255.0:
            return 0.0, 255.0
        raise SlideError(
            f"'{name}' is a float image with values in [{lo:g}, {hi:g}]; expected 0..1 or "
            "0..255. Convert it to 8-bit RGB first"
        )
    lo, hi = (float(v) for v in np.percentile(sample, (0.1, 99.9)))
    if hi <= lo:
        hi = lo + 1
    return lo, hi


def _sample(arr: Any, windows: int = 3, size: int = 256) -> np.ndarray:
    """A few small windows spread over a (possibly huge) array, concatenated flat."""
    shape = arr.shape
    if int(np.prod(shape)) <= 4096 * 4096 * 4:
        return np.asarray(arr[...]).ravel()
    ys = np.linspace(0, max(shape[0] - size, 0), windows).astype(int)
    xs = np.linspace(0, max(shape[1] - size, 0), windows).astype(int)
    parts = [np.asarray(arr[y : y + size, x : x + size]).ravel() for y in ys for x in xs]
    return np.concatenate(parts)


def _decode_error(path: Any, err: BaseException) -> SlideError:
    msg = str(err)
    low = msg.lower()
    codec_words = ("imagecodecs", "codec", "compression", "decompress")
    if isinstance(err, (ImportError, NotImplementedError)) or any(w in low for w in codec_words):
        return SlideError(
            f"cannot decode the image data of '{path}' ({msg or type(err).__name__}). "
            "The codec is missing: install or upgrade imagecodecs (pip install -U imagecodecs)"
        )
    return SlideError(f"cannot read the image data of '{path}': {msg or type(err).__name__}. "
                      "The file may be damaged or truncated")


def _open_image(p: Path) -> Slide:
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # big, not absurd
            im = Image.open(p)
        with im:
            if im.mode in ("LA", "La"):  # grey + alpha: 2 channels, refused as documented
                _check_layout(p.name, np.dtype(np.uint8), 2)
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
    _check_layout(p.name, arr.dtype, channels)
    if arr.ndim == 2:
        arr = arr[..., None]
    rgb = to_rgb8(arr, _value_range(p.name, arr, arr.dtype))
    fmt = "png" if p.suffix.lower() == ".png" else "jpeg"
    return Slide([rgb], path=p, name=p.name, fmt=fmt,
                 info={"compression": fmt, "tile_size": None, "associated": []})


def _pick_series(tf: Any) -> tuple[Any, dict[str, Any]]:
    """The slide series (largest non-associated image) and the associated ones by name."""
    main, assoc = None, {}
    for s in tf.series:
        name = (s.name or "").strip().lower()
        if any(name.startswith(a) for a in ASSOCIATED_NAMES):
            assoc[name] = s
            continue
        if "Y" not in s.axes or "X" not in s.axes:
            continue
        area = s.shape[s.axes.index("Y")] * s.shape[s.axes.index("X")]
        if main is None or area > main[0]:
            main = (area, s)
    if main is None:
        raise SlideError(f"'{tf.filename}' holds no 2D image series")
    return main[1], assoc


#: Words of tifffile log messages that mean the file lost data (truncated, overwritten).
_DAMAGE_WORDS = ("offset", "corrupt", "truncat", "invalid", "unexpected end", "out of range")


class _TiffComplaints(logging.Handler):
    """Collects what tifffile logs while a file is parsed (instead of printing it)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if any(w in msg.lower() for w in _DAMAGE_WORDS):
            self.messages.append(msg)
        else:  # a harmless remark about a readable file: keep it out of the user's way
            logging.getLogger(__name__).debug("tifffile: %s", msg)

    def __enter__(self) -> _TiffComplaints:
        self._logger = logging.getLogger("tifffile")
        self._propagate = self._logger.propagate
        self._logger.addHandler(self)
        self._logger.propagate = False
        return self

    def __exit__(self, *exc: object) -> None:
        self._logger.removeHandler(self)
        self._logger.propagate = self._propagate


def _damaged(p: Path, complaints: list[str]) -> SlideError:
    """The one-line error of a file tifffile could only partly parse."""
    first = complaints[0].split("> ", 1)[-1].strip()  # drop tifffile's "<TiffPages @n>" prefix
    return SlideError(f"'{p}' is truncated or damaged ({p.stat().st_size:,} bytes; {first}). "
                      "Copy or download the file again")


def _open_tiff(p: Path) -> Slide:
    import tifffile

    with _TiffComplaints() as complaints:
        try:
            tf = tifffile.TiffFile(p)
        except tifffile.TiffFileError as err:
            raise SlideError(f"'{p}' is not a TIFF/SVS file or its header is damaged ({err})") \
                from err
        except (OSError, ValueError, KeyError, IndexError, struct.error) as err:
            raise SlideError(f"'{p}' cannot be opened: {err}. The file may be damaged") from err
        closers: list[Any] = [tf]
        try:
            slide = _slide_from_tiff(p, tf, closers)
            if complaints.messages:  # pages or tags tifffile had to skip: refuse, don't guess
                raise _damaged(p, complaints.messages)
            return slide
        except SlideError as err:
            for c in reversed(closers):
                c.close()
            if complaints.messages and "truncated" not in str(err):
                raise _damaged(p, complaints.messages) from err
            raise
        except BaseException:
            for c in reversed(closers):
                c.close()
            raise


def _slide_from_tiff(p: Path, tf: Any, closers: list[Any]) -> Slide:
    import zarr

    try:
        series, assoc = _pick_series(tf)
        page = series.pages[0] if series.pages else tf.pages[0]
        if page is None:
            raise SlideError(f"'{p}' has no readable first page")
    except SlideError:
        raise
    except Exception as err:  # noqa: BLE001 - tifffile raises many kinds on damaged files
        raise SlideError(
            f"'{p}' cannot be parsed as a slide: {err}. The file may be damaged"
        ) from err

    axes = series.axes
    extra = [(a, n) for a, n in zip(axes, series.shape, strict=True) if a not in "YXSC" and n > 1]
    if extra:
        desc = ", ".join(f"{a}={n}" for a, n in extra)
        raise SlideError(f"'{p}' is a stack ({desc}); only single 2D slides are supported")
    ch_axes = [i for i, a in enumerate(axes) if a in "SC"]
    if len(ch_axes) > 1:
        raise SlideError(f"'{p}' has several channel axes ({axes}); not supported")
    channels = series.shape[ch_axes[0]] if ch_axes else 1
    _check_layout(p.name, series.dtype, channels)
    _check_complete(p, series)

    try:
        store = series.aszarr()
        closers.append(store)
        root = zarr.open(store, mode="r")
    except Exception as err:  # noqa: BLE001
        raise _decode_error(p, err) from err
    if isinstance(root, zarr.Group):
        arrays = [root[str(i)] for i in range(len(series.levels))]
    else:
        arrays = [root]

    native = series.dtype == np.uint8 and axes.endswith("YXS") and channels == 3 and all(
        a.ndim == 3 for a in arrays
    )
    if native:
        levels: list[Any] = list(arrays)
    else:
        scale = _value_range(p.name, arrays[-1], series.dtype)
        levels = [ConvertedLevel(a, axes, scale) for a in arrays]

    # decode one tile now, so a missing codec is reported at open, not on first paint
    smallest = levels[-1]
    try:
        np.asarray(smallest[: min(16, smallest.shape[0]), : min(16, smallest.shape[1])])
    except WsssError:
        raise
    except Exception as err:  # noqa: BLE001
        raise _decode_error(p, err) from err

    if len(levels) == 1 and max(levels[0].shape[:2]) > LAZY_PYRAMID_MIN:
        levels = _lazy_pyramid(levels[0])

    mpp, source = _mpp_from_tiff(tf, page)
    fmt = ("svs" if tf.is_svs else "ome-tiff" if tf.is_ome
           else "bigtiff" if tf.is_bigtiff else "tiff")
    thumb = assoc.get("thumbnail")
    info = {
        "compression": getattr(page.compression, "name", str(page.compression)).lower(),
        "tile_size": [int(page.tilelength), int(page.tilewidth)] if page.is_tiled else None,
        "stripped": not page.is_tiled,
        "dtype": str(series.dtype),
        "axes": axes,
        "associated": sorted(assoc),
    }
    return Slide(levels, mpp=mpp, mpp_source=source, path=p, name=p.name, fmt=fmt, info=info,
                 closers=closers, thumbnail_source=thumb)


def _check_complete(p: Path, series: Any) -> None:
    """Refuse files whose image data reach past the end (a truncated download/copy)."""
    size = p.stat().st_size
    for lv in series.levels:
        for pg in lv.pages:
            if pg is None:
                continue
            offs, counts = pg.dataoffsets, pg.databytecounts
            ends = np.asarray(offs, np.int64) + np.asarray(counts, np.int64)
            if len(ends) and int(ends.max()) > size:
                raise SlideError(
                    f"'{p}' is truncated: its image data need more than its {size:,} bytes. "
                    "Copy or download the file again"
                )

