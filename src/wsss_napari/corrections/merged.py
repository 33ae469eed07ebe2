"""A lazy read-only view of a base mask with an edit store's corrections painted over it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .store import EditStore


class MergedMask:
    """Read-only array-like: a base mask with an :class:`EditStore`'s edits over it."""

    dtype = np.dtype(np.uint8)
    ndim = 2

    def __init__(self, store: EditStore, base: Any) -> None:
        self.store, self.base = store, base
        self.shape = store.shape

    def __getitem__(self, key: Any) -> np.ndarray:
        if not (isinstance(key, tuple) and len(key) == 2
                and all(isinstance(k, slice) for k in key)):
            return np.asarray(self)[key]
        (y0, y1, sy), (x0, x1, sx) = (k.indices(n) for k, n in zip(key, self.shape, strict=True))
        region = self.store.merged(y0, x0, max(y1 - y0, 0), max(x1 - x0, 0), self.base)
        return region[::sy, ::sx]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        a = self[0:self.shape[0], 0:self.shape[1]]
        return a if dtype is None else a.astype(dtype)
