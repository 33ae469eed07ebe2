"""Whole-image primitives the rules share: components, their areas, per-component lookups.

At 4096^2 the rules' time goes to full-image passes over component-id images, so these keep
each pass as narrow and cache-friendly as it can be:

- component ids are **uint16** whenever a labelling has fewer than 65535 components (the
  usual case, even at 4096^2), int32 only when it has more: ``cv2.connectedComponents``
  writes half the bytes (46 vs 64 ms at 4096^2).
- areas and lookups ``lut[ids]`` are compiled loops (``_kernels``): ``np.bincount`` and
  ``np.take`` first copy every id to a 128 MB ``intp`` array.
- a fresh 64 MB output costs ~15 ms of page faults per call; :func:`scratch` keeps one
  per-thread buffer per purpose, reused by the next call of the same shape.
- labellings run on one core: :func:`in_background` runs the glass detection on a helper
  thread beside the class argmax and the background, ~45 ms less of a cold 4096^2 chain
  (measured).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

#: Largest component count ``cv2.connectedComponents`` can give as CV_16U.
MAX_U16 = 65535

_local = threading.local()
#: every live thread's scratch pool, so :func:`release_scratch` frees the helper's too
_pools: dict[int, dict[str, np.ndarray]] = {}
_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


class _Done:
    """A result computed on the spot, with the ``Future.result`` interface."""

    def __init__(self, value: Any) -> None:
        self._value = value

    def result(self) -> Any:
        return self._value


def in_background(fn: Callable[[], Any]) -> Future | _Done:
    """Start ``fn()`` on one helper thread; ``.result()`` waits for its value.

    For work that releases the GIL (OpenCV) and runs on one core, beside work that would
    leave a core idle. Inside the helper thread itself (or on one core) ``fn`` runs now.
    """
    global _executor
    if (os.cpu_count() or 1) < 2 or threading.current_thread().name.startswith("wsss-pp"):
        return _Done(fn())
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(1, thread_name_prefix="wsss-pp")
    return _executor.submit(fn)


def scratch(name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
    """A reusable per-thread buffer (uninitialised). Never return or cache it: the next
    call with the same ``name`` overwrites it. Names in use: ``u8a``, ``u8b``, ``pad`` (masks),
    ``cc16`` / ``cc32`` (component ids): ~7 bytes per pixel of the last image size, per
    thread (10 after a labelling with more than 65535 components)."""
    pool = getattr(_local, "pool", None)
    if pool is None:
        pool = _local.pool = {}
        with _executor_lock:
            alive = {t.ident for t in threading.enumerate()}
            for ident in [i for i in _pools if i not in alive]:
                del _pools[ident]  # a finished thread's buffers
            _pools[threading.get_ident()] = pool
    buf = pool.get(name)
    if buf is None or buf.shape != tuple(shape) or buf.dtype != np.dtype(dtype):
        buf = pool[name] = np.empty(shape, dtype)
    return buf


def components(mask: np.ndarray, scratch_name: str | None = None) -> tuple[int, np.ndarray]:
    """8-connected components of the nonzero pixels of a uint8 mask.

    Args:
        mask: uint8 or bool (H, W).
        scratch_name: write the ids into the :func:`scratch` buffers ``<name>16`` /
            ``<name>32`` (overwritten by the next call with that name); None: fresh arrays.

    Returns:
        (n, ids): ``n`` ids including 0 (= not in the mask); ids (H, W) uint16 when
        ``n <= 65535``, else int32.
    """
    import cv2

    mask = mask.view(np.uint8) if mask.dtype == bool else mask
    for ltype, dtype, suffix in ((cv2.CV_16U, np.uint16, "16"), (cv2.CV_32S, np.int32, "32")):
        out = None if scratch_name is None else scratch(scratch_name + suffix, mask.shape, dtype)
        try:
            if out is None:
                n, ids = cv2.connectedComponents(mask, connectivity=8, ltype=ltype)
            else:
                n, ids = cv2.connectedComponents(mask, out, 8, ltype)
        except cv2.error:
            if ltype != cv2.CV_16U:
                raise
            continue  # more than 65535 components: OpenCV refuses CV_16U, label as int32
        return int(n), ids
    raise AssertionError("unreachable")


def areas(ids: np.ndarray, n: int) -> np.ndarray:
    """Pixels per id (int64 (n,)) of a uint16 / int32 id image with ids ``0 .. n - 1``.

    A compiled count with one update per run of equal ids along a row: 8-12 ms at 4096^2 on
    one core, against 15-19 ms of ``cv2.calcHist`` on two (and ~55 ms of banded
    ``np.bincount`` for int32 ids).
    """
    from ._kernels import count_ids

    if ids.size == 0:
        return np.zeros(n, np.int64)
    return count_ids(ids.reshape(ids.shape[0], -1) if ids.ndim != 2 else ids, int(n))


def lookup(lut: np.ndarray, ids: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``lut[ids]`` for int ids in ``0 .. lut.size - 1`` (a compiled loop: no ``intp`` copy)."""
    from ._kernels import take

    lut = np.ascontiguousarray(lut)
    if out is None:
        out = np.empty(ids.shape, lut.dtype)
    if ids.size and lut.size:
        take(lut, ids, out)
    return out


def release_scratch() -> None:
    """Free every thread's scratch buffers (:meth:`LiveTuner.clear` calls it).

    A buffer in use by a running call stays alive until that call returns; the next call
    allocates afresh.
    """
    with _executor_lock:
        for pool in _pools.values():
            pool.clear()
