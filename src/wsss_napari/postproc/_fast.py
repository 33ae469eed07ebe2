"""Whole-image primitives the rules share: components, their areas, per-component lookups.

At 4096^2 the rules' time went to numpy passes over int32 component-id images, not to the
labelling itself (``cv2.connectedComponents`` ~20 ms). These helpers keep such passes cheap:

- ``np.bincount`` / ``np.take`` over 16 M ids first convert to a 128 MB ``intp`` copy; done in
  bands of :data:`ROWS` rows the temporaries stay in cache (2x less time, measured).
- a fresh 64 MB output costs ~15 ms of page faults per call; :func:`scratch` keeps one
  per-thread buffer per purpose, reused by the next call of the same shape.
"""

from __future__ import annotations

import threading

import numpy as np

#: Rows per band for the banded bincount / take.
ROWS = 256

_local = threading.local()


def scratch(name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
    """A reusable per-thread buffer (uninitialised). Never return or cache it: the next
    call with the same ``name`` overwrites it. Names in use: ``i32`` (component ids),
    ``u8a``, ``u8b`` (masks): ~6 bytes per pixel of the last image size, per thread."""
    pool = getattr(_local, "pool", None)
    if pool is None:
        pool = _local.pool = {}
    buf = pool.get(name)
    if buf is None or buf.shape != tuple(shape) or buf.dtype != np.dtype(dtype):
        buf = pool[name] = np.empty(shape, dtype)
    return buf


def components(mask: np.ndarray, out: np.ndarray | None = None) -> tuple[int, np.ndarray]:
    """8-connected components of the nonzero pixels of a uint8 mask.

    Returns:
        (n, ids): ``n`` ids including 0 (= not in the mask); ids int32 (H, W), written into
        ``out`` when given (int32, same shape).
    """
    import cv2

    mask = mask.view(np.uint8) if mask.dtype == bool else mask
    if out is None:
        n, ids = cv2.connectedComponents(mask, connectivity=8, ltype=cv2.CV_32S)
    else:
        n, ids = cv2.connectedComponents(mask, out, 8, cv2.CV_32S)
    return int(n), ids


def areas(ids: np.ndarray, n: int) -> np.ndarray:
    """Pixels per id (int64 (n,)): a bincount in bands of rows (see module docstring)."""
    total = np.zeros(n, np.int64)
    for y in range(0, ids.shape[0], ROWS):
        total += np.bincount(ids[y:y + ROWS].ravel(), minlength=n)
    return total


def lookup(lut: np.ndarray, ids: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``lut[ids]`` for int ids in ``0 .. lut.size - 1``, in bands of rows (uint8 lut)."""
    lut = np.ascontiguousarray(lut)
    if out is None:
        out = np.empty(ids.shape, lut.dtype)
    for y in range(0, ids.shape[0], ROWS):
        np.take(lut, ids[y:y + ROWS], out=out[y:y + ROWS], mode="clip")
    return out



def release_scratch() -> None:
    """Free this thread's scratch buffers (:meth:`LiveTuner.clear` calls it)."""
    _local.pool = {}
