"""Saving painted corrections within seconds, from a background thread (an
:class:`Autosaver` in front of an :class:`~wsss_napari.corrections.store.EditStore`)."""

from __future__ import annotations

import atexit
import functools
import threading
import time
import weakref
from collections.abc import Callable

import numpy as np

from .. import WsssError
from .store import UNEDITED, EditStore


class Autosaver:
    """Writes dirty regions to an :class:`EditStore` from a background thread within seconds.

    The widget calls :meth:`mark` from napari's paint events (cheap: it copies the region and
    returns); a daemon thread writes everything marked within ``delay`` seconds of the first
    unsaved mark. :meth:`flush_now` writes synchronously (before fine-tuning, export or
    closing). A failed write keeps the region pending, retries on the next round and reports
    through ``on_error`` (the widget shows a notification). Pending edits are also flushed at
    interpreter exit.

    Args:
        store: where edits go.
        delay: seconds between the first unsaved mark and its write.
        on_error: called with the exception of a failed background write.
    """

    def __init__(self, store: EditStore, delay: float = 2.0,
                 on_error: Callable[[BaseException], None] | None = None) -> None:
        self.store = store
        self.delay = float(delay)
        self.on_error = on_error
        self.last_error: BaseException | None = None
        self.saves = 0
        self._pending: dict[tuple[int, int, int, int], tuple[np.ndarray, np.ndarray]] = {}
        self._first_dirty: float | None = None
        self._cond = threading.Condition()
        self._write_lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="wsss-autosave", daemon=True)
        self._thread.start()
        self._atexit = functools.partial(_flush_at_exit, weakref.ref(self))
        atexit.register(self._atexit)

    @property
    def pending(self) -> int:
        """Number of regions marked but not yet written."""
        with self._cond:
            return len(self._pending)

    def mark(self, y: int, x: int, h: int, w: int, labels: np.ndarray,
             edited_mask: np.ndarray | None = None) -> None:
        """Queue a region's current labels (copied) for saving; see :meth:`EditStore.write`."""
        lab = np.array(labels, np.uint8, copy=True)
        if lab.shape != (h, w):
            raise WsssError(f"marked labels shape {lab.shape} != region ({h}, {w})")
        m = lab != UNEDITED if edited_mask is None else np.array(edited_mask, bool, copy=True)
        key = (int(y), int(x), int(h), int(w))
        with self._cond:
            if self._closed:
                raise WsssError("the autosaver was closed")
            old = self._pending.get(key)
            if old is not None:
                m = m | old[1]  # pixels edited earlier stay edited, with today's labels
            self._pending[key] = (lab, m)
            if self._first_dirty is None:
                self._first_dirty = time.monotonic()
            self._cond.notify()

    def flush_now(self) -> int:
        """Write everything pending now; returns the number of regions written.

        Raises:
            WsssError: a region could not be written (it stays pending).
        """
        with self._write_lock:
            with self._cond:
                batch, self._pending = self._pending, {}
                self._first_dirty = None
            done = 0
            try:
                for key, (lab, m) in batch.items():
                    self.store.write(key[0], key[1], lab, m)
                    done += 1
            except BaseException:
                with self._cond:
                    # put the unwritten regions back, under anything marked meanwhile
                    rest = dict(list(batch.items())[done:])
                    for k, (lab, m) in self._pending.items():
                        old = rest.get(k)
                        rest[k] = (lab, m | old[1]) if old is not None else (lab, m)
                    self._pending = rest
                    self._first_dirty = time.monotonic()
                raise
            if done:
                self.saves += 1
            return done

    def close(self) -> None:
        """Flush and stop the background thread."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=10)
        atexit.unregister(self._atexit)
        self.flush_now()

    def __enter__(self) -> Autosaver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (self._first_dirty is None):
                    self._cond.wait()
                if self._closed:
                    return
                wait = self._first_dirty + self.delay - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
            try:
                self.flush_now()
                self.last_error = None
            except Exception as err:  # noqa: BLE001 - reported, retried next round
                self.last_error = err
                if self.on_error is not None:
                    self.on_error(err)
                time.sleep(min(self.delay, 1.0))


def _flush_at_exit(ref: weakref.ref) -> None:
    saver = ref()
    if saver is None:
        return
    try:
        saver.flush_now()
    except Exception:  # noqa: BLE001,S110 - at exit there is no one left to tell
        pass
