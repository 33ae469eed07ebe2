"""Progress records yielded by long-running core generators.

Long work (inference, training, export) is written as a generator that yields
:class:`Progress` at least once per tile batch or step and *returns* its result. The napari
widgets wrap such generators in a thread worker (cancel takes effect at the next yield);
the CLI and tests drive them with :func:`run_to_end`.
"""

from __future__ import annotations

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


def run_to_end(gen: Generator[Progress, None, T], show: bool = False, desc: str | None = None) -> T:
    """Drive a progress generator to completion and return its result.

    With ``show=True`` a tqdm bar per stage is printed to stderr (used by the CLI).
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
                from tqdm.auto import tqdm

                stage = p.stage
                bar = tqdm(total=p.total or None, desc=desc or p.stage, unit="")
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
