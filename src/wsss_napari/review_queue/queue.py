"""The queue a reviewer steps through: navigation, decisions, JSON persistence, exports."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import WsssError, __version__
from ..classes import LABEL_NAMES
from ..params import UncertaintyParams
from ..region import MaskGeometry
from .grid import paste, resample_item, write_decision
from .items import ACCEPT, EXCLUDE, FORMAT, FORMAT_VERSION, QUEUE_FILE, Decision, QueueItem


def queue_path(edit_store_root: str | Path) -> Path:
    """Where the queue of a slide is saved: beside its edit store (``<slide>.wsss/``)."""
    return Path(edit_store_root).parent / QUEUE_FILE


def same_slide(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two slide identities name the same slide (path + size, else name + content)."""
    if not a or not b:
        return True
    for keys in (("path", "size"), ("thumb",), ("path",), ("name",)):
        if all(k in a and k in b for k in keys):
            return all(a[k] == b[k] for k in keys)
    return True


@dataclass
class ReviewQueue:
    """Items ranked by uncertainty, the decisions taken on them and the reviewer's position."""

    items: list[QueueItem]
    geometry: MaskGeometry
    params: UncertaintyParams
    slide_id: dict[str, Any] = field(default_factory=dict)
    cams_key: str = ""
    map_shape: tuple[int, int] = (0, 0)
    decisions: dict[str, Decision] = field(default_factory=dict)
    position: int = 0
    path: Path | None = None

    # -- navigation ----------------------------------------------------------------------
    def excluded(self, item: QueueItem) -> bool:
        d = self.decisions.get(item.id)
        return d is not None and d.action == EXCLUDE

    def active(self) -> list[QueueItem]:
        """Items still in the queue (excluded ones are out)."""
        return [it for it in self.items if not self.excluded(it)]

    def current(self) -> QueueItem | None:
        items = self.active()
        if not items:
            return None
        self.position = min(max(self.position, 0), len(items) - 1)
        return items[self.position]

    def step(self, delta: int) -> QueueItem | None:
        """Move ``delta`` items (clamped to the queue) and return the item there."""
        self.position += int(delta)
        return self.current()

    def next_pending(self) -> QueueItem | None:
        """The first item after the current one without a decision (else the next one)."""
        items = self.active()
        for i in range(self.position + 1, len(items)):
            if items[i].id not in self.decisions:
                self.position = i
                return items[i]
        return self.step(1)

    def __iter__(self) -> Iterator[QueueItem]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    # -- decisions -----------------------------------------------------------------------
    def decide(self, item: QueueItem | str, action: str, label: int | None = None,
               store: Any = None) -> Decision:
        """Record a decision (and write it to the edit ``store``, if given).

        ``accept`` keeps the item's current class; ``relabel`` needs ``label``; ``exclude``
        clears the item's edits and takes it out of the queue.
        """
        it = self._item(item)
        if action == ACCEPT and label is None:
            label = it.cls
        d = Decision(action, None if label is None else int(label), time.time())
        if store is not None:
            write_decision(store, it, d, self.geometry)
        self.decisions[it.id] = d
        return d

    def _item(self, item: QueueItem | str) -> QueueItem:
        key = item.id if isinstance(item, QueueItem) else str(item)
        for it in self.items:
            if it.id == key:
                return it
        raise WsssError(f"no item '{key}' in the review queue")

    def reviewed(self) -> list[QueueItem]:
        return [it for it in self.active() if it.id in self.decisions]

    def status(self) -> str:
        """``"14 of 40 reviewed, 3.2 mm²"`` (px when the mpp is unknown)."""
        done, items = self.reviewed(), self.active()
        if self.geometry.mpp is None:
            area = f"{sum(it.area_px for it in done) * self.geometry.downsample ** 2:,.0f} px²"
        else:
            area = f"{sum(it.area_mm2 or 0.0 for it in done):.2g} mm²"
        excluded = len(self.items) - len(items)
        extra = f", {excluded} excluded" if excluded else ""
        return f"{len(done)} of {len(items)} reviewed, {area}{extra}"

    def exclusion_mask(self, shape: tuple[int, int], downsample: float,
                       origin: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
        """bool mask of excluded pixels on a grid of ``shape`` at ``downsample`` (level-0
        ``origin``): training code sets these pixels to ignore."""
        out = np.zeros(shape, bool)
        target = MaskGeometry(y=origin[0], x=origin[1], downsample=downsample)
        for it in self.items:
            if self.excluded(it):
                y, x, m = resample_item(it, self.geometry, target)
                paste(out, y, x, m)
        return out

    # -- persistence ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": FORMAT_VERSION, "tool": __version__,
                "slide": self.slide_id, "cams_key": self.cams_key,
                "geometry": self.geometry.to_dict(), "map_shape": list(self.map_shape),
                "params": self.params.to_dict(), "position": self.position,
                "items": [it.to_dict() for it in self.items],
                "decisions": {k: {"action": d.action, "label": d.label, "time": d.time}
                              for k, d in self.decisions.items()}}

    def save(self, path: str | Path | None = None) -> Path:
        """Write the queue atomically (temp file, then rename); returns the path."""
        from ..io.atomic import atomic_write_text

        target = Path(path) if path is not None else self.path
        if target is None:
            raise WsssError("the review queue has no file: give a path to save it")
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(target, json.dumps(self.to_dict()))
        self.path = target
        return target

    @classmethod
    def load(cls, path: str | Path, slide_id: dict[str, Any] | None = None) -> ReviewQueue:
        """Reopen a saved queue; ``slide_id`` (if given) must name the slide it was built on."""
        p = Path(path)
        try:
            data = json.loads(p.read_text())
        except FileNotFoundError as err:
            raise WsssError(f"no review queue at '{p}'") from err
        except (OSError, ValueError) as err:
            raise WsssError(f"cannot read the review queue '{p}': {err}") from err
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise WsssError(f"'{p}' is not a wsss-napari review queue")
        stored = dict(data.get("slide") or {})
        if slide_id is not None and not same_slide(stored, slide_id):
            raise WsssError(
                f"the review queue '{p}' was built on the maps of another slide "
                f"({stored.get('name') or stored.get('path')}), not "
                f"{slide_id.get('name') or slide_id.get('path')}; delete it or choose "
                "another edits folder")
        try:
            q = cls(items=[QueueItem.from_dict(d) for d in data["items"]],
                    geometry=MaskGeometry.from_dict(data["geometry"]),
                    params=UncertaintyParams.from_dict(data["params"], strict=False),
                    slide_id=stored, cams_key=str(data.get("cams_key", "")),
                    map_shape=tuple(data.get("map_shape", (0, 0))),  # type: ignore[arg-type]
                    decisions={k: Decision(v["action"], v.get("label"), float(v.get("time", 0)))
                               for k, v in data.get("decisions", {}).items()},
                    position=int(data.get("position", 0)), path=p)
        except (KeyError, TypeError, ValueError) as err:
            raise WsssError(f"the review queue '{p}' is damaged: {err}") from err
        return q

    @property
    def score_name(self) -> str:
        """What the items' ``score`` is: ``uncertainty`` (mean) or ``expected_gain``."""
        return "uncertainty" if self.params.score == "mean" else self.params.score.value

    # -- exports -------------------------------------------------------------------------
    def write_csv(self, path: str | Path) -> Path:
        """``queue.csv``: rank, level-0 box (y x h w), area_mm2, class, runner_up, score."""
        from ..io.atomic import atomic_write_text

        buf = io.StringIO()
        wr = csv.writer(buf, lineterminator="\n")
        wr.writerow(["rank", "y", "x", "h", "w", "area_mm2", "class", "runner_up", "score",
                     "decision"])
        for it in self.items:
            r = it.region
            d = self.decisions.get(it.id)
            wr.writerow([it.rank, _g(r.y), _g(r.x), _g(r.height), _g(r.width),
                         "" if it.area_mm2 is None else f"{it.area_mm2:.6f}",
                         LABEL_NAMES[it.cls], LABEL_NAMES[it.runner_up], f"{it.score:.4f}",
                         "" if d is None else (d.action if d.label is None
                                               else f"{d.action}:{LABEL_NAMES[d.label]}")])
        return atomic_write_text(Path(path), buf.getvalue())

    def to_geojson(self) -> dict[str, Any]:
        """QuPath annotations: one feature per item, probabilities and score as measurements."""
        from ..io.export import mask_to_geojson

        g = self.geometry
        features = []
        for it in self.items:
            r0, c0, _, _ = it.box
            fc = mask_to_geojson(np.where(it.mask, it.cls, 255).astype(np.uint8),
                                 geometry=g.crop(r0, c0), simplify=0.0, group="class",
                                 labels=[it.cls])
            for f in fc["features"]:
                meas = {f"p_{n}": p for n, p in zip(LABEL_NAMES, it.probs, strict=True)}
                meas.update({self.score_name: it.score, "rank": it.rank})
                if it.area_mm2 is not None:
                    meas["area_mm2"] = it.area_mm2
                f["properties"].update({"name": f"#{it.rank} {LABEL_NAMES[it.cls]}",
                                        "measurements": meas, "queue_id": it.id,
                                        "runner_up": LABEL_NAMES[it.runner_up]})
                features.append(f)
        return {"type": "FeatureCollection", "features": features}

    def write_geojson(self, path: str | Path) -> Path:
        from ..io.atomic import atomic_write_text

        return atomic_write_text(Path(path), json.dumps(self.to_geojson()))


def _g(v: float) -> str:
    return f"{v:g}"
