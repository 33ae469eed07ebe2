"""Run a core progress generator in a napari thread worker, wired to a widget's controls.

The core writes long work as generators yielding :class:`~wsss_napari.progress.Progress`;
this module is the one place that turns them into background jobs: the yields move a
progress bar, ``returned`` hands the result to the widget (which adds layers on the GUI
thread), errors become one clear napari notification, and Cancel quits the worker at its
next yield (the core yields per tile or step, so within a second).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator
from typing import Any

from qtpy.QtWidgets import QLabel, QProgressBar, QPushButton

from .. import WsssError
from ..progress import Progress

log = logging.getLogger(__name__)


def notify_error(err: BaseException, what: str = "") -> None:
    """Show ``err`` as one napari notification; user errors as-is, bugs with their type."""
    from napari.utils.notifications import show_error

    if isinstance(err, WsssError):
        msg = str(err)
    else:
        log.error("%s failed", what or "job", exc_info=err)
        msg = f"{what + ' failed: ' if what else ''}{type(err).__name__}: {err}"
    show_error(msg)


def preload_torch() -> None:
    """Import torch, timm and the model code on the GUI thread before a worker needs them.

    torch imports triton when it is installed, and triton's LLVM clashes with Mesa's when a
    viewer already uses Mesa's OpenGL: :func:`._triton.load_triton_isolated` pre-loads it
    so that it does not (no global side effect: triton and ``torch.compile`` keep working).
    """
    from ._triton import load_triton_isolated

    load_triton_isolated()
    import timm  # noqa: F401
    import torch  # noqa: F401

    from ..models import checkpoint  # noqa: F401


def describe(p: Progress) -> str:
    """One status line for a progress record, e.g. ``tiles 12/40  loss=0.41``."""
    count = f"{p.done}/{p.total}" if p.total else f"{p.done}"
    extras = "  ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in p.info.items()
        if isinstance(v, (int, float, str)) and len(str(v)) < 24
    )
    return f"{p.stage} {count}" + (f"  {extras}" if extras else "")


class JobRunner:
    """One background job at a time for a widget: run/cancel buttons, bar and status line.

    Args:
        run_button: disabled while a job runs.
        cancel_button: enabled only while a job runs; quits the job.
        bar: shows ``done / total`` of the latest progress record (busy when total is 0).
        status: shows :func:`describe` of the latest record, then the outcome.
    """

    def __init__(self, run_button: QPushButton, cancel_button: QPushButton | None,
                 bar: QProgressBar, status: QLabel) -> None:
        self.run_button = run_button
        self.cancel_button = cancel_button
        self.bar = bar
        self.status = status
        self.worker = None
        self.on_progress: list[Callable[[Progress], None]] = []
        if cancel_button is not None:
            cancel_button.setEnabled(False)
            cancel_button.clicked.connect(self.cancel)
        bar.setVisible(False)

    @property
    def running(self) -> bool:
        return self.worker is not None

    def start(self, make_gen: Callable[[], Generator[Progress, None, Any]],
              on_returned: Callable[[Any], None], what: str = "job"):
        """Start ``make_gen()`` in a worker thread; ``on_returned(result)`` runs on the GUI thread.

        Returns:
            The started ``GeneratorWorker`` (its ``finished``/``aborted`` signals are public).

        Raises:
            WsssError: when a job of this widget is still running.
        """
        from napari.qt.threading import create_worker

        if self.worker is not None:
            raise WsssError(f"{what}: a job is already running; cancel it or wait")

        def job():
            return (yield from make_gen())

        worker = create_worker(job, _start_thread=False, _ignore_errors=True)
        worker.started.connect(self._on_worker_started)
        worker.yielded.connect(self._on_worker_yielded)
        worker.returned.connect(lambda result: self._on_worker_returned(result, on_returned, what))
        worker.errored.connect(lambda err: self._on_worker_errored(err, what))
        worker.aborted.connect(self._on_worker_aborted)
        worker.finished.connect(self._on_worker_finished)
        self.worker = worker
        self.status.setText(f"{what}: starting…")
        worker.start()
        return worker

    def cancel(self) -> None:
        """Ask the running job to stop at its next progress yield."""
        if self.worker is not None:
            self.status.setText("cancelling…")
            self.worker.quit()

    def close(self, wait_ms: int = 5000) -> None:
        """Quit the running job and wait for its thread (used when the widget closes)."""
        worker = self.worker
        if worker is None:
            return
        worker.quit()
        try:
            worker.await_workers(msecs=wait_ms)
        except (AttributeError, RuntimeError):
            pass

    def _on_worker_started(self) -> None:
        self.run_button.setEnabled(False)
        if self.cancel_button is not None:
            self.cancel_button.setEnabled(True)
        self.bar.setVisible(True)
        self.bar.setRange(0, 0)

    def _on_worker_yielded(self, p: Any) -> None:
        if not isinstance(p, Progress):
            return
        self.bar.setRange(0, max(p.total, 0))
        self.bar.setValue(min(p.done, p.total) if p.total else 0)
        self.status.setText(describe(p))
        for cb in self.on_progress:
            cb(p)

    def _on_worker_returned(self, result: Any, on_returned: Callable[[Any], None],
                            what: str) -> None:
        self.status.setText(f"{what}: done")
        try:
            on_returned(result)
        except Exception as err:  # noqa: BLE001 - shown to the user, the viewer keeps running
            notify_error(err, what)
            self.status.setText(f"{what}: failed")

    def _on_worker_errored(self, err: BaseException, what: str) -> None:
        self.status.setText(f"{what}: failed — {err}")
        notify_error(err, what)

    def _on_worker_aborted(self) -> None:
        self.status.setText("cancelled")

    def _on_worker_finished(self) -> None:
        self.worker = None
        self.run_button.setEnabled(True)
        if self.cancel_button is not None:
            self.cancel_button.setEnabled(False)
        self.bar.setVisible(False)
