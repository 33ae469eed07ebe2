"""On-disk store of the pathologist's corrections, so nothing painted is lost by a crash.

An :class:`EditStore` is a zarr (v3) group, by default ``<slide>.wsss/edits.zarr`` beside the
slide (or ``<project>/<slide name>.wsss/edits.zarr`` in a chosen project folder), holding:

- ``labels``: the slide-level corrected mask at one downsample, ``uint8``, ``255`` = not
  edited, chunked in square tiles (512 px by default). Only edited tiles exist on disk
  (zarr drops chunks that are all fill value), so a fresh store costs nothing.
- ``tile_mtime``: one ``float64`` per tile, the UNIX time of its last edit (``0`` = never),
  which is the per-tile "edited" bitmap.
- attrs: the slide's identity (name, path, size, mtime, mpp), mask shape, downsample, tile
  size and class names, checked when the store is reopened, and the label encoding.

Values are the core's (challenge) classes, ``0`` tumor .. ``3`` background, and ``255`` for
"not corrected", distinct from every class. Format 2 (this one) is written by widgets that
translate napari's layer encoding (``class + 1``, ``0`` = erased) at the boundary
(:mod:`wsss_napari.labels_encoding`). Format 1 stores were written while napari's eraser
saved ``0`` = tumor; :meth:`EditStore.open` refuses them with one line and
:func:`~wsss_napari.corrections.migrate.upgrade_store` migrates them (keeping, or dropping,
their tumor corrections).

Durability: :meth:`EditStore.write` returns only after zarr has written every touched chunk
file, and zarr's local store writes each chunk to a temporary file and renames it into place,
so a crash (of napari or of the machine's Python process) leaves each chunk either old or new,
never torn. Chunks are not fsync'ed: a power cut may lose the last seconds of edits. The
labels chunks are written before the tile times, so after a crash between the two the edits
are still there (``edited_tiles`` rescans the chunk files when asked to).

Undo/redo belongs to napari: the store only mirrors the Labels layer's current content, fed by
an :class:`~wsss_napari.corrections.autosave.Autosaver` that the widget calls on paint events.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import WsssError
from ..classes import LABEL_NAMES
from ..region import MaskGeometry
from .identity import edits_path, slide_identity
from .merged import MergedMask

__all__ = [  # where a store lives and the merged view stay importable from here
    "ENCODING", "FORMAT", "FORMAT_VERSION", "UNEDITED", "EditStore", "EditedTile", "MergedMask",
    "edits_path", "slide_identity",
]

#: Label value meaning "not edited" (the same as "unlabelled" in masks).
UNEDITED = 255
FORMAT = "wsss-napari-edits"
FORMAT_VERSION = 2
#: What the stored values mean (written into the store's attrs).
ENCODING = {"classes": "0 tumor, 1 stroma, 2 normal, 3 background", "uncorrected": UNEDITED}
_TIME_CHUNK = 64  # tiles per side in one chunk of the tile-time array


@dataclass(frozen=True)
class EditedTile:
    """One edited tile: its grid index, its box in mask pixels and the time of its last edit."""

    ty: int
    tx: int
    y: int
    x: int
    h: int
    w: int
    mtime: float


class EditStore:
    """Slide-level corrected mask on disk, written tile by tile; see the module docstring.

    Create or reopen with :meth:`open_or_create` (or :meth:`open` for an existing store).
    Methods are thread-safe (the :class:`Autosaver` writes from its own thread).
    """

    def __init__(self, root: Path, group: Any, read_only: bool = False) -> None:
        self.root = Path(root)
        self._group = group
        self.read_only = read_only
        self.labels = group["labels"]
        self._times = group["tile_mtime"]
        attrs = dict(group.attrs)
        self.shape: tuple[int, int] = tuple(attrs["shape"])  # type: ignore[assignment]
        self.downsample: float = float(attrs["downsample"])
        self.tile: int = int(attrs["tile"])
        self.slide_id: dict[str, Any] = dict(attrs["slide"])
        self.class_names: tuple[str, ...] = tuple(attrs["class_names"])
        self._lock = threading.RLock()

    @property
    def geometry(self) -> MaskGeometry:
        """Where :attr:`labels` lies on the slide: the whole slide (origin 0, 0) at
        :attr:`downsample`, with the slide's mpp and file (what exports record)."""
        mpp = self.slide_id.get("mpp")
        return MaskGeometry(y=0, x=0, downsample=self.downsample,
                            mpp=None if mpp is None else float(mpp),
                            slide=str(self.slide_id.get("path") or self.slide_id.get("name", "")))

    # -- opening -------------------------------------------------------------------------
    @classmethod
    def open_or_create(cls, root: str | os.PathLike, slide_id: Mapping[str, Any] | str,
                       shape: tuple[int, int], downsample: float, tile: int = 512,
                       class_names: tuple[str, ...] = LABEL_NAMES) -> EditStore:
        """Open the store at ``root``, creating it (and its folder) if it does not exist.

        Args:
            root: the ``.zarr`` folder, e.g. :func:`edits_path` of the slide.
            slide_id: :func:`slide_identity` of the slide (a string is taken as its name).
            shape: ``(H, W)`` of the mask at ``downsample``.
            downsample: mask pixel size in level-0 pixels.
            tile: chunk edge in mask pixels.
            class_names: names of label values 0, 1, ...

        Raises:
            WsssError: the folder cannot be written, or an existing store was made for a
                different slide file, mask shape or downsample.
        """
        import zarr

        root = Path(root)
        ident = {"name": slide_id} if isinstance(slide_id, str) else dict(slide_id)
        shape = (int(shape[0]), int(shape[1]))
        if shape[0] < 1 or shape[1] < 1 or downsample <= 0 or tile < 16:
            raise WsssError(f"bad edit store geometry: shape={shape}, downsample={downsample}, "
                            f"tile={tile}")
        if (root / "zarr.json").exists():
            store = cls.open(root)
            store._check_matches(ident, shape, downsample)
            return store
        from ..io.atomic import check_writable_dir

        check_writable_dir(root.parent)
        try:
            group = zarr.open_group(str(root), mode="w-", zarr_format=3)
            group.create_array("labels", shape=shape, chunks=(tile, tile), dtype="uint8",
                               fill_value=UNEDITED)
            grid = (math.ceil(shape[0] / tile), math.ceil(shape[1] / tile))
            group.create_array("tile_mtime", shape=grid, dtype="float64", fill_value=0.0,
                               chunks=(min(_TIME_CHUNK, grid[0]), min(_TIME_CHUNK, grid[1])))
            group.attrs.update({
                "format": FORMAT, "format_version": FORMAT_VERSION, "encoding": ENCODING,
                "slide": ident,
                "shape": list(shape), "downsample": float(downsample), "tile": int(tile),
                "class_names": list(class_names), "created": time.time(),
            })
        except OSError as err:
            raise WsssError(f"cannot create the edit store '{root}': "
                            f"{err.strerror or err}") from err
        return cls(root, group)

    @classmethod
    def open(cls, root: str | os.PathLike, read_only: bool = False) -> EditStore:
        """Open an existing store (``WsssError`` if ``root`` is not one)."""
        import zarr

        root = Path(root)
        if not (root / "zarr.json").is_file():
            raise WsssError(f"'{root}' is not a wsss-napari edit store (no zarr.json inside)")
        try:
            group = zarr.open_group(str(root), mode="r" if read_only else "r+")
        except Exception as err:  # noqa: BLE001 - corrupt metadata of any kind
            raise WsssError(f"cannot open the edit store '{root}': {err}") from err
        if group.attrs.get("format") != FORMAT:
            raise WsssError(f"'{root}' is a zarr group but not a wsss-napari edit store")
        version = int(group.attrs.get("format_version", 1))
        if version < FORMAT_VERSION:
            raise WsssError(
                f"the edit store '{root}' has format {version}, written while napari's eraser "
                "saved erased pixels as tumor: upgrade it with wsss_napari.corrections.migrate."
                "upgrade_store(path, drop_tumor=...) or move it away")
        if version > FORMAT_VERSION:
            raise WsssError(f"the edit store '{root}' has format {version}, newer than this "
                            f"wsss-napari reads ({FORMAT_VERSION}): update wsss-napari")
        return cls(root, group, read_only=read_only)

    def _check_matches(self, ident: dict[str, Any], shape: tuple[int, int],
                       downsample: float) -> None:
        if self.shape != shape or not math.isclose(self.downsample, downsample, rel_tol=1e-6):
            raise WsssError(
                f"the edit store '{self.root}' holds a {self.shape[1]}x{self.shape[0]} mask at "
                f"downsample {self.downsample:g}, not {shape[1]}x{shape[0]} at {downsample:g}; "
                "choose another project folder or open the slide at the stored downsample")
        old_size, new_size = self.slide_id.get("size"), ident.get("size")
        if old_size is not None and new_size is not None and old_size != new_size:
            raise WsssError(
                f"the edit store '{self.root}' was made for a different file "
                f"({self.slide_id.get('path', self.slide_id.get('name'))}, {old_size} bytes); "
                "move it away or choose another project folder")
        if ident and ident != self.slide_id and not self.read_only:
            # the slide was moved or touched: remember where it is now
            self.slide_id = {**self.slide_id, **ident}
            self._group.attrs["slide"] = self.slide_id

    # -- reading and writing -------------------------------------------------------------
    def write(self, y: int, x: int, labels: np.ndarray,
              edited_mask: np.ndarray | None = None) -> int:
        """Write a region of corrected labels; durable on return.

        Args:
            y, x: top-left corner of the region in mask pixels.
            labels: ``uint8 (h, w)`` labels of the region.
            edited_mask: ``bool (h, w)``, which pixels to write; default ``labels != 255``.
                Pixels outside it keep their stored value. A ``255`` inside it forgets the
                edit there (what the review widget's eraser does); :meth:`clear` also resets
                the tile's edit time.

        Returns:
            The number of pixels written.
        """
        labels = np.asarray(labels)
        if labels.ndim != 2:
            raise WsssError(f"edit labels must be 2-D, got shape {labels.shape}")
        mask = labels != UNEDITED if edited_mask is None else np.asarray(edited_mask, bool)
        if mask.shape != labels.shape:
            raise WsssError(f"edited_mask shape {mask.shape} != labels shape {labels.shape}")
        sl, lab, m = self._clip(y, x, labels, mask)
        if sl is None or not m.any():
            return 0
        return self._put(sl, np.where(m, lab, 0).astype(np.uint8), m)

    def clear(self, y: int, x: int, h: int, w: int, mask: np.ndarray | None = None) -> int:
        """Forget the edits in a region (all of it, or where ``mask``); returns pixels cleared."""
        m = np.ones((h, w), bool) if mask is None else np.asarray(mask, bool)
        sl, lab, m = self._clip(y, x, np.full((h, w), UNEDITED, np.uint8), m)
        if sl is None or not m.any():
            return 0
        n = self._put(sl, lab, m)
        with self._lock:  # tiles left without any edit are no longer "edited"
            for tile in self.edited_tiles():
                if (tile.y < sl[0].stop and tile.y + tile.h > sl[0].start
                        and tile.x < sl[1].stop and tile.x + tile.w > sl[1].start
                        and (self.read(tile.y, tile.x, tile.h, tile.w) == UNEDITED).all()):
                    self._times[tile.ty, tile.tx] = 0.0
        return n

    def _put(self, sl: tuple[slice, slice], values: np.ndarray, m: np.ndarray) -> int:
        self._check_writable()
        with self._lock:
            try:
                cur = self.labels[sl]
                self.labels[sl] = np.where(m, values, cur)
                self._touch(sl, m)
            except OSError as err:
                raise WsssError(f"could not save edits to '{self.root}': "
                                f"{err.strerror or err}") from err
        return int(m.sum())

    def read(self, y: int, x: int, h: int, w: int) -> np.ndarray:
        """Stored labels of a region, ``uint8 (h, w)``; 255 where not edited or outside."""
        out = np.full((h, w), UNEDITED, np.uint8)
        y0, x0 = max(y, 0), max(x, 0)
        y1, x1 = min(y + h, self.shape[0]), min(x + w, self.shape[1])
        if y1 > y0 and x1 > x0:
            with self._lock:
                out[y0 - y:y1 - y, x0 - x:x1 - x] = self.labels[y0:y1, x0:x1]
        return out

    def merged(self, y: int, x: int, h: int, w: int, base_mask: Any) -> np.ndarray:
        """The base mask of a region with the stored edits painted over it.

        ``base_mask`` is either the region itself ``(h, w)`` or an array-like of the whole
        mask (``self.shape``), sliced lazily.
        """
        shape = tuple(getattr(base_mask, "shape", ()))
        if shape == (h, w):
            base = np.asarray(base_mask, np.uint8)
        elif shape == self.shape:
            base = np.full((h, w), UNEDITED, np.uint8)
            y0, x0 = max(y, 0), max(x, 0)
            y1, x1 = min(y + h, self.shape[0]), min(x + w, self.shape[1])
            if y1 > y0 and x1 > x0:
                base[y0 - y:y1 - y, x0 - x:x1 - x] = np.asarray(base_mask[y0:y1, x0:x1])
        else:
            raise WsssError(f"base mask shape {shape} is neither the region ({h}, {w}) nor "
                            f"the store's mask {self.shape}")
        edits = self.read(y, x, h, w)
        return np.where(edits != UNEDITED, edits, base).astype(np.uint8)

    def merged_view(self, base_mask: Any) -> MergedMask:
        """A lazy read-only array (for exports) of the whole base mask with edits over it."""
        if tuple(base_mask.shape) != self.shape:
            raise WsssError(f"base mask shape {tuple(base_mask.shape)} != store's {self.shape}")
        return MergedMask(self, base_mask)

    def edited_tiles(self, rescan: bool = False) -> list[EditedTile]:
        """Tiles that hold edits, in row-major order.

        ``rescan=True`` also trusts chunk files found on disk (recovers the list after a crash
        between a labels write and its time stamp).
        """
        with self._lock:
            times = np.asarray(self._times[...])
            if rescan:
                for ty, tx in self._chunk_files():
                    if times[ty, tx] == 0:
                        times[ty, tx] = -1.0
        t = self.tile
        out = []
        for ty, tx in zip(*np.nonzero(times), strict=True):
            y, x = int(ty) * t, int(tx) * t
            out.append(EditedTile(int(ty), int(tx), y, x, min(t, self.shape[0] - y),
                                  min(t, self.shape[1] - x), float(times[ty, tx])))
        return out

    def edited_pixel_counts(self) -> dict[str, int]:
        """Number of edited pixels per class name (what a fine-tuning run learns from)."""
        counts = np.zeros(256, np.int64)
        for tile in self.edited_tiles(rescan=True):
            counts += np.bincount(self.read(tile.y, tile.x, tile.h, tile.w).ravel(),
                                  minlength=256)
        return {name: int(counts[i]) for i, name in enumerate(self.class_names) if counts[i]}

    def close(self) -> None:
        """Release the store (nothing is buffered, so nothing is lost without it)."""

    def __enter__(self) -> EditStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"EditStore('{self.root}', shape={self.shape}, downsample={self.downsample:g}, "
                f"tile={self.tile})")

    # -- helpers -------------------------------------------------------------------------
    def _check_writable(self) -> None:
        if self.read_only:
            raise WsssError(f"the edit store '{self.root}' was opened read-only")

    def _clip(self, y: int, x: int, labels: np.ndarray, mask: np.ndarray):
        h, w = labels.shape
        y0, x0 = max(y, 0), max(x, 0)
        y1, x1 = min(y + h, self.shape[0]), min(x + w, self.shape[1])
        if y1 <= y0 or x1 <= x0:
            return None, labels, mask
        inner = (slice(y0 - y, y1 - y), slice(x0 - x, x1 - x))
        return (slice(y0, y1), slice(x0, x1)), labels[inner], mask[inner]

    def _touch(self, sl: tuple[slice, slice], m: np.ndarray) -> None:
        """Stamp the tiles where ``m`` (the written pixels of region ``sl``) has any pixel."""
        t = self.tile
        ty0, tx0 = sl[0].start // t, sl[1].start // t
        ty1, tx1 = (sl[0].stop - 1) // t + 1, (sl[1].stop - 1) // t + 1
        stamps = self._times[ty0:ty1, tx0:tx1]
        now = time.time()
        for ty in range(ty0, ty1):
            for tx in range(tx0, tx1):
                ys = slice(max(ty * t, sl[0].start) - sl[0].start,
                           min((ty + 1) * t, sl[0].stop) - sl[0].start)
                xs = slice(max(tx * t, sl[1].start) - sl[1].start,
                           min((tx + 1) * t, sl[1].stop) - sl[1].start)
                if m[ys, xs].any():
                    stamps[ty - ty0, tx - tx0] = now
        self._times[ty0:ty1, tx0:tx1] = stamps

    def _chunk_files(self) -> list[tuple[int, int]]:
        base = self.root / "labels" / "c"
        found = []
        if base.is_dir():
            for row in base.iterdir():
                if not row.name.isdigit():
                    continue
                for col in row.iterdir():
                    if col.name.isdigit():
                        found.append((int(row.name), int(col.name)))
        return found
