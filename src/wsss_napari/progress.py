"""Progress records yielded by long-running core generators.

Long work (inference, training, export) is written as a generator that yields
:class:`Progress` at least once per tile batch or step and *returns* its result. The napari
widgets wrap such generators in a thread worker (cancel takes effect at the next yield);
the CLI and tests drive them with :func:`run_to_end`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Progress:
    """One progress tick: ``done`` of ``total`` units of ``stage`` (``total=0``: unknown)."""

    stage: str
    done: int
    total: int = 0
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 0.0


#: Seconds between two progress lines when stderr is not a terminal (a log file, a pipe).
LOG_INTERVAL = 30.0


class _LineBar:
    """tqdm's interface, as plain lines: on start, every LOG_INTERVAL s, and at the end."""

    def __init__(self, total: int | None, desc: str) -> None:
        self.total, self.desc, self.n = total, desc, 0
        self._last = time.monotonic()
        self._said: int | None = None
        self._write()

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        """Not shown in logs."""

    def refresh(self) -> None:
        if time.monotonic() - self._last >= LOG_INTERVAL:
            self._write()

    def close(self) -> None:
        if self._said != self.n:
            self._write()

    def _write(self) -> None:
        self._last, self._said = time.monotonic(), self.n
        of = f"/{self.total}" if self.total else ""
        print(f"{self.desc}: {self.n}{of}", file=sys.stderr, flush=True)  # noqa: T201


def _progress_bar(total: int | None, desc: str) -> Any:
    """A tqdm bar on a terminal; a few plain lines otherwise (logs are not flooded)."""
    if not getattr(sys.stderr, "isatty", lambda: False)():
        return _LineBar(total, desc)
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="")


def run_to_end(gen: Generator[Progress, None, T], show: bool = False, desc: str | None = None) -> T:
    """Drive a progress generator to completion and return its result.

    With ``show=True`` progress goes to stderr (used by the CLI): a tqdm bar per stage on a
    terminal, else one line per stage at its start and end and every :data:`LOG_INTERVAL`
    seconds between.
    """
    bar = None
    stage = None
    try:
        while True:
            p = next(gen)
            if not show:
                continue
            if p.stage != stage:
                if bar is not None:
                    bar.close()
                stage = p.stage
                bar = _progress_bar(p.total or None, desc or p.stage)
            bar.total = p.total or None
            bar.n = p.done
            if p.info:
                bar.set_postfix({k: v for k, v in p.info.items() if _short(v)}, refresh=False)
            bar.refresh()
    except StopIteration as stop:
        return stop.value
    finally:
        if bar is not None:
            bar.close()


def _short(v: Any) -> bool:
    return isinstance(v, (int, float, str)) and len(str(v)) < 24
