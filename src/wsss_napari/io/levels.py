"""Lazy pyramid levels: array-likes that read (and convert) only the region asked for.

Every level looks the same to callers: ``(H, W, 3) uint8``. :class:`ConvertedLevel` turns
grey, 16-bit, float and RGBA sources into that per region (by the image policy of
:mod:`wsss_napari.io.images`: alpha composited onto white); :class:`LazyDownsampled`
computes a level from its parent on demand; anything else is refused with a
:class:`SlideError` that names the file.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import numpy as np

from .. import WsssError
from .images import to_rgb8


class SlideError(WsssError):
    """A slide cannot be opened or read; the message names the file and what to do."""



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


def tiles_of(level: Any, tile: int) -> Iterator[np.ndarray]:
    H, W = level.shape[:2]
    for y in range(0, H, tile):
        for x in range(0, W, tile):
            blk = np.asarray(level[y : y + tile, x : x + tile])
            if blk.shape[:2] != (tile, tile):
                full = np.full((tile, tile, 3), 255, np.uint8)
                full[: blk.shape[0], : blk.shape[1]] = blk
                blk = full
            yield blk


def lazy_pyramid(level0: Any, min_size: int = 1024) -> list[Any]:
    levels = [level0]
    while max(levels[-1].shape[:2]) > min_size:
        levels.append(LazyDownsampled(levels[-1], factor=2))
    return levels


def check_layout(name: str, dtype: np.dtype, channels: int) -> None:
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


def value_range(name: str, arr: Any, dtype: np.dtype) -> tuple[float, float] | None:
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
