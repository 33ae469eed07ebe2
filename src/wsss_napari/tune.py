"""Grid search of the post-processing parameters against ground truth.

As the seed method does, the background exponent is searched first (it moves the most
pixels), then every other parameter of the grid in turn, each around the best found so far
(coordinate-wise). Each sample keeps a :class:`~wsss_napari.postproc.LiveTuner`, so trying a
value recomputes only the stages that parameter affects. The score is the challenge metric:
mIoU over tumor / stroma / normal, with the background mask forced when the sample has one.
"""

from __future__ import annotations

import json
from collections.abc import Generator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import WsssError
from .metrics import confusion_matrix, format_report, iou_report
from .params import PostprocParams
from .progress import Progress

#: Searched first, as in the method.
FIRST = "bg_exponent"


@dataclass
class TuneSample:
    """One image's cached CAMs and its ground truth.

    Attributes:
        cams: float32 (C, H, W) CAMs in [0, 1].
        gt: uint8 (H, W) ground truth (0..3; 255 = ignore).
        image: uint8 RGB (H, W, 3) for glass detection, or None.
        scores: image-level class scores (C,), or None.
        background: (H, W) background mask (nonzero = background) forced in the prediction.
        present: bool (C,) classes allowed, or None.
        name: for messages.
        pixel_scale: model-resolution pixels per CAM pixel (whole-slide maps: their
            ``out_stride``), so the found pixel-count parameters hold at any map resolution.
    """

    cams: np.ndarray
    gt: np.ndarray
    image: np.ndarray | None = None
    scores: np.ndarray | None = None
    background: np.ndarray | None = None
    present: np.ndarray | None = None
    name: str = ""
    pixel_scale: float = 1.0


@dataclass
class TuneResult:
    """Outcome of :func:`grid_search`.

    Attributes:
        best: the best parameters found.
        report: :func:`~wsss_napari.metrics.iou_report` of ``best`` over all samples.
        rows: one dict per evaluated parameter set, in evaluation order: the parameters that
            the grid varies, ``miou``, ``miou_bg`` and the IoU of every class.
        varied: names of the parameters in the grid.
    """

    best: PostprocParams
    report: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
    varied: tuple[str, ...] = ()

    def table(self, top: int | None = None) -> str:
        """Rows as a plain-text table, best first (``top``: only that many)."""
        rows = sorted(self.rows, key=lambda r: -np.nan_to_num(r["miou"], nan=-1.0))
        rows = rows[:top] if top else rows
        iou_names = list(self.report["iou"])
        cols = [*self.varied, "miou", "miou_bg", *iou_names]
        cells = [[_fmt(r.get(c)) for c in cols] for r in rows]
        widths = [max(len(c), *(len(row[i]) for row in cells)) + 2 for i, c in enumerate(cols)]
        out = ["".join(f"{c:>{w}}" for c, w in zip(cols, widths, strict=True))]
        out += ["".join(f"{v:>{w}}" for v, w in zip(row, widths, strict=True)) for row in cells]
        return "\n".join(out)

    def summary(self) -> str:
        """The best parameters' metric report as text."""
        return format_report(self.report)

    def save(self, path: str | Path) -> Path:
        """Write ``best`` as YAML (.yaml/.yml) or JSON; ``PostprocParams.from_file`` loads it.

        The file also holds the metrics under a ``tune`` key, which the loader ignores.
        """
        from .io.atomic import atomic_write_text

        p = Path(path)
        data = {
            PostprocParams.key(): self.best.to_dict(),
            "tune": {k: self.report[k] for k in ("miou", "miou_bg", "fwiou", "iou")},
        }
        if p.suffix.lower() in (".yaml", ".yml"):
            import yaml

            text = yaml.safe_dump(data, sort_keys=False)
        else:
            text = json.dumps(data, indent=2)
        return atomic_write_text(p, text)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if np.isnan(v) else f"{v:.4f}"
    return str(v)


def default_grid() -> dict[str, list[Any]]:
    """A grid that covers the useful range of every rule (about 30 evaluations)."""
    return {
        "bg_exponent": [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0],
        "score_threshold": [0.0, 0.1, 0.25, 0.5],
        "white_threshold": [190.0, 200.0, 210.0, 220.0, 230.0],
        "min_area_pct": [0.0, 2.0, 5.0, 10.0],
        "min_region": [0, 50, 200, 800],
        "knn_k": [4, 8, 16],
        "island_rule": [False, True],
    }


def evaluate(samples: Iterable[TuneSample], params: PostprocParams,
             tuners: list[Any] | None = None) -> dict[str, Any]:
    """The metric report of ``params`` over ``samples`` (confusion matrices summed)."""
    samples = list(samples)
    tuners = tuners or _tuners(samples)
    conf = np.zeros((4, 4), np.int64)
    for s, t in zip(samples, tuners, strict=True):
        conf += confusion_matrix(t.run(params), s.gt)
    return iou_report(conf)


def _tuners(samples: list[TuneSample]) -> list[Any]:
    from .postproc import LiveTuner

    out = []
    for s in samples:
        gt = np.asarray(s.gt)
        if gt.shape != tuple(np.shape(s.cams)[1:]):
            raise WsssError(f"ground truth {gt.shape} of sample {s.name or '?'} does not match "
                            f"its CAMs {tuple(np.shape(s.cams)[1:])}")
        out.append(LiveTuner(s.cams, image=s.image, scores=s.scores, background=s.background,
                             present=s.present, pixel_scale=s.pixel_scale))
    return out


def grid_search(samples: Iterable[TuneSample], grid: dict[str, Iterable[Any]],
                base: PostprocParams | None = None
                ) -> Generator[Progress, None, TuneResult]:
    """Coordinate-wise grid search, ``bg_exponent`` first; yields Progress per evaluation.

    Args:
        samples: images with CAMs and ground truth.
        grid: parameter name -> values to try (names of :class:`PostprocParams` fields).
        base: starting parameters (the values of parameters not in the grid).

    Returns:
        :class:`TuneResult` (ties keep the earlier, i.e. the base-closest, value).
    """
    samples = list(samples)
    if not samples:
        raise WsssError("tuning needs at least one image with ground truth")
    base = base or PostprocParams()
    fields = set(base.to_dict())
    unknown = [k for k in grid if k not in fields]
    if unknown:
        raise WsssError(f"unknown post-processing parameter(s) in the grid: {', '.join(unknown)}")
    order = ([FIRST] if FIRST in grid else []) + [k for k in grid if k != FIRST]
    values = {k: list(grid[k]) for k in order}
    total = sum(len(v) for v in values.values())
    tuners = _tuners(samples)
    seen: dict[tuple, dict[str, Any]] = {}
    rows: list[dict[str, Any]] = []
    best, best_report = base, None
    done = 0
    for name in order:
        for v in values[name]:
            cand = best.replace(**{name: v})
            key = tuple(sorted(cand.to_dict().items(), key=lambda kv: kv[0]))
            key = tuple((k, tuple(x) if isinstance(x, list) else x) for k, x in key)
            if key not in seen:
                report = evaluate(samples, cand, tuners)
                seen[key] = report
                row = {k: getattr(cand, k) for k in order}
                row = {k: (x.value if hasattr(x, "value") else x) for k, x in row.items()}
                rows.append({**row, "miou": report["miou"], "miou_bg": report["miou_bg"],
                             **report["iou"]})
            report = seen[key]
            if best_report is None or _better(report, best_report):
                best, best_report = cand, report
            done += 1
            yield Progress("tune", done, total,
                           {"param": name, "value": v, "best_miou": round(best_report["miou"], 4)})
    if best_report is None:  # empty grid: score the base itself
        best_report = evaluate(samples, base, tuners)
    return TuneResult(best=best, report=best_report, rows=rows, varied=tuple(order))


def _better(a: dict[str, Any], b: dict[str, Any]) -> bool:
    x, y = np.nan_to_num(a["miou"], nan=-1.0), np.nan_to_num(b["miou"], nan=-1.0)
    return bool(x > y + 1e-12)
