"""A ranked queue of the regions a pathologist should look at first, and their decisions.

:func:`build_queue` cuts an :class:`~wsss_napari.uncertainty.UncertaintyMap` into items and
ranks them by their mean uncertainty (the expected share of wrong pixels, so reviewing in
this order fixes the most errors per mm² looked at):

- ``region`` mode: connected regions of pixels above ``threshold``, cut on a ``tile`` grid
  so that no item is larger than a screen;
- ``tile`` mode: every ``tile`` square holding reviewable pixels.

Each :class:`QueueItem` has a level-0 box (:class:`~wsss_napari.region.Region`), its pixel
mask, its area (mm² when the slide's mpp is known), its current class, the runner-up and its
mean class probabilities.

A :class:`ReviewQueue` records decisions (``accept``, ``relabel`` as a class, ``exclude``)
and saves itself atomically as JSON next to the slide's edit store (:func:`queue_path`),
with the identity of the slide whose maps built it, so it survives a restart and is never
applied to another slide. Accept / relabel write the item's pixels into the
:class:`~wsss_napari.corrections.store.EditStore` (they become corrections that fine-tuning
learns from like any painted edit); exclude removes the item's edits and keeps it out of the
queue; :meth:`ReviewQueue.exclusion_mask` tells training code which pixels to ignore.
Labels are in the challenge encoding (0 tumor, 1 stroma, 2 normal, 3 background).
"""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import WsssError, __version__
from .classes import LABEL_NAMES
from .params import QueueMode, UncertaintyParams
from .region import MaskGeometry, Region
from .uncertainty import UncertaintyMap, class_probabilities

FORMAT = "wsss-napari-review-queue"
FORMAT_VERSION = 1
QUEUE_FILE = "review_queue.json"
#: Decisions a reviewer can take on an item.
ACCEPT, RELABEL, EXCLUDE = "accept", "relabel", "exclude"
DECISIONS = (ACCEPT, RELABEL, EXCLUDE)


@dataclass(frozen=True)
class QueueItem:
    """One region to review.

    Attributes:
        id: stable name (``r<row>c<col>n<k>`` of its box in map px).
        rank: 1 = most uncertain.
        box: ``(row, col, h, w)`` of its bounding box in map pixels.
        mask: bool ``(h, w)``, the item's pixels inside the box.
        region: the box in level-0 pixels.
        area_px: number of map pixels of the item.
        area_mm2: its area in mm² (``None`` when the slide's mpp is unknown).
        cls: current class (the most frequent label of its pixels).
        runner_up: the class with the next-highest mean probability.
        probs: mean probability of each class (``LABEL_NAMES`` order) over its pixels.
        score: mean uncertainty of its pixels.
    """

    id: str
    rank: int
    box: tuple[int, int, int, int]
    mask: np.ndarray
    region: Region
    area_px: int
    area_mm2: float | None
    cls: int
    runner_up: int
    probs: tuple[float, ...]
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "rank": self.rank, "box": list(self.box),
                "mask": _pack(self.mask), "region": self.region.to_dict(),
                "area_px": self.area_px, "area_mm2": self.area_mm2, "cls": self.cls,
                "runner_up": self.runner_up, "probs": list(self.probs), "score": self.score}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QueueItem:
        box = tuple(int(v) for v in d["box"])
        return cls(id=str(d["id"]), rank=int(d["rank"]), box=box,  # type: ignore[arg-type]
                   mask=_unpack(d["mask"], box[2], box[3]), region=Region.from_dict(d["region"]),
                   area_px=int(d["area_px"]),
                   area_mm2=None if d.get("area_mm2") is None else float(d["area_mm2"]),
                   cls=int(d["cls"]), runner_up=int(d["runner_up"]),
                   probs=tuple(float(v) for v in d["probs"]), score=float(d["score"]))


@dataclass(frozen=True)
class Decision:
    """What the reviewer decided for an item: ``action`` and, for relabel/accept, ``label``."""

    action: str
    label: int | None = None
    time: float = 0.0

    def __post_init__(self) -> None:
        if self.action not in DECISIONS:
            raise WsssError(f"decision must be one of {DECISIONS}, not {self.action!r}")
        if self.action != EXCLUDE and (self.label is None
                                       or not 0 <= int(self.label) < len(LABEL_NAMES)):
            raise WsssError(f"a '{self.action}' decision needs a class 0..{len(LABEL_NAMES) - 1}")


def _pack(mask: np.ndarray) -> str:
    return base64.b64encode(np.packbits(np.asarray(mask, bool).ravel()).tobytes()).decode()


def _unpack(text: str, h: int, w: int) -> np.ndarray:
    bits = np.unpackbits(np.frombuffer(base64.b64decode(text), np.uint8), count=h * w)
    return bits.reshape(h, w).astype(bool)


def queue_path(edit_store_root: str | Path) -> Path:
    """Where the queue of a slide is saved: beside its edit store (``<slide>.wsss/``)."""
    return Path(edit_store_root).parent / QUEUE_FILE


def _candidates(umap: UncertaintyMap, params: UncertaintyParams, t: int) -> tuple[Any, int]:
    """Integer item labels ``(h, w)`` (0 = none) and their count."""
    from scipy import ndimage

    h, w = umap.values.shape
    tiles = (np.arange(h)[:, None] // t) * math.ceil(w / t) + (np.arange(w)[None, :] // t)
    if params.mode == QueueMode.TILE:
        keys = np.where(umap.valid, tiles + 1, 0)
    else:
        comp, _ = ndimage.label(umap.valid & (umap.values > params.threshold))
        keys = np.where(comp > 0, comp.astype(np.int64) * (tiles.max() + 1) + tiles + 1, 0)
    flat = keys.ravel()
    nz = flat > 0
    lab = np.zeros(flat.shape, np.int64)
    if nz.any():
        _, inv = np.unique(flat[nz], return_inverse=True)
        lab[nz] = inv + 1
    return lab.reshape(h, w), int(lab.max())


def build_queue(umap: UncertaintyMap, cams: Any, params: UncertaintyParams | None = None,
                pixel_scale: float = 1.0, background: np.ndarray | None = None,
                slide_id: dict[str, Any] | None = None, cams_key: str = "") -> ReviewQueue:
    """Rank the uncertain regions (or tiles) of a map.

    Args:
        umap: the map's uncertainty (:func:`~wsss_napari.uncertainty.uncertainty_map`).
        cams: the CAMs ``(C, h, w)`` it was computed from (for each item's probabilities).
        params: mode, threshold, tile and minimum size (model px), queue length.
        pixel_scale: model-resolution pixels per map pixel (``SlideCams.out_stride``).
        background: the glass mask used for ``umap``, if any.
        slide_id: identity of the slide (saved, and checked when the queue is reopened).
        cams_key: the CAM store's cache key (saved for provenance).
    """
    from scipy import ndimage

    params = params or UncertaintyParams()
    t = max(1, int(round(params.tile / pixel_scale)))
    min_px = params.min_area / float(pixel_scale) ** 2
    lab, n = _candidates(umap, params, t)
    items: list[QueueItem] = []
    if n:
        idx = np.arange(1, n + 1)
        area = ndimage.sum_labels(np.ones_like(umap.values), lab, idx)
        mean_u = ndimage.mean(umap.values, lab, idx)
        objects = ndimage.find_objects(lab)
        order = np.lexsort((idx, -mean_u))
        geo = umap.geometry
        for k in order:
            if area[k] < max(min_px, 1) or objects[k] is None:
                continue
            sl = objects[k]
            m = lab[sl] == k + 1
            r0, c0 = sl[0].start, sl[1].start
            bh, bw = sl[0].stop - r0, sl[1].stop - c0
            block = np.asarray(cams[:, sl[0], sl[1]], np.float32)
            bgm = None if background is None else np.asarray(background[sl], bool)
            p = class_probabilities(block, params.bg_exponent, bgm)[:, m].mean(axis=1)
            cls = int(np.bincount(umap.labels[sl][m], minlength=len(LABEL_NAMES)).argmax())
            others = p.copy()
            others[cls] = -1.0
            y0, x0 = geo.to_level0(r0, c0)
            region = Region(y=y0, x=x0, height=bh * geo.downsample, width=bw * geo.downsample)
            a_mm2 = geo.area_mm2(int(m.sum()))
            items.append(QueueItem(
                id=f"r{r0}c{c0}n{len(items)}", rank=len(items) + 1, box=(r0, c0, bh, bw), mask=m,
                region=region, area_px=int(m.sum()),
                area_mm2=None if a_mm2 is None else round(a_mm2, 6), cls=cls,
                runner_up=int(others.argmax()), probs=tuple(round(float(v), 4) for v in p),
                score=round(float(mean_u[k]), 5)))
            if params.max_items and len(items) >= params.max_items:
                break
    return ReviewQueue(items=items, geometry=umap.geometry, params=params,
                       slide_id=dict(slide_id or {}), cams_key=cams_key,
                       map_shape=tuple(umap.values.shape))  # type: ignore[arg-type]


def slide_queue(slide_cams: Any, params: UncertaintyParams | None = None,
                background: np.ndarray | None = None) -> tuple[ReviewQueue, UncertaintyMap]:
    """Uncertainty map and queue of a whole-slide CAM store (``SlideCams``)."""
    import zarr

    from .uncertainty import slide_uncertainty

    params = params or UncertaintyParams()
    umap = slide_uncertainty(slide_cams, params, background=background)
    try:
        key = str(zarr.open_group(str(slide_cams.path), mode="r").attrs.get("key", ""))
    except Exception:  # noqa: BLE001 - provenance only
        key = ""
    queue = build_queue(umap, slide_cams.cams, params, pixel_scale=slide_cams.out_stride,
                        background=background, slide_id=slide_cams.slide_id, cams_key=key)
    return queue, umap


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
                _paste(out, y, x, m)
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
        from .io.atomic import atomic_write_text

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

    # -- exports -------------------------------------------------------------------------
    def write_csv(self, path: str | Path) -> Path:
        """``queue.csv``: rank, level-0 box (y x h w), area_mm2, class, runner_up, score."""
        from .io.atomic import atomic_write_text

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
        from .io.export import mask_to_geojson

        g = self.geometry
        features = []
        for it in self.items:
            r0, c0, _, _ = it.box
            fc = mask_to_geojson(np.where(it.mask, it.cls, 255).astype(np.uint8),
                                 geometry=g.crop(r0, c0), simplify=0.0, group="class",
                                 labels=[it.cls])
            for f in fc["features"]:
                meas = {f"p_{n}": p for n, p in zip(LABEL_NAMES, it.probs, strict=True)}
                meas.update({"uncertainty": it.score, "rank": it.rank})
                if it.area_mm2 is not None:
                    meas["area_mm2"] = it.area_mm2
                f["properties"].update({"name": f"#{it.rank} {LABEL_NAMES[it.cls]}",
                                        "measurements": meas, "queue_id": it.id,
                                        "runner_up": LABEL_NAMES[it.runner_up]})
                features.append(f)
        return {"type": "FeatureCollection", "features": features}

    def write_geojson(self, path: str | Path) -> Path:
        from .io.atomic import atomic_write_text

        return atomic_write_text(Path(path), json.dumps(self.to_geojson()))


def _g(v: float) -> str:
    return f"{v:g}"


def resample_item(item: QueueItem, src: MaskGeometry, dst: MaskGeometry,
                  values: np.ndarray | None = None) -> tuple[int, int, np.ndarray]:
    """The item's mask (or ``values`` over its box) on another grid: ``(row, col, array)``
    there, by nearest pixel centres (pixels outside the box: ``False`` / 255)."""
    r0, c0, h, w = item.box
    ly0, lx0 = src.to_level0(r0, c0)
    ly1, lx1 = src.to_level0(r0 + h, c0 + w)
    fy0, fx0 = dst.from_level0(ly0, lx0)
    fy1, fx1 = dst.from_level0(ly1, lx1)
    y0, x0 = int(math.floor(fy0)), int(math.floor(fx0))
    y1, x1 = max(int(math.ceil(fy1)), y0 + 1), max(int(math.ceil(fx1)), x0 + 1)
    # centre of each destination pixel -> source pixel of the item's box
    cy = dst.y + (np.arange(y0, y1) + 0.5) * dst.downsample
    cx = dst.x + (np.arange(x0, x1) + 0.5) * dst.downsample
    sy = np.floor((cy - src.y) / src.downsample).astype(int) - r0
    sx = np.floor((cx - src.x) / src.downsample).astype(int) - c0
    oky, okx = (sy >= 0) & (sy < h), (sx >= 0) & (sx < w)
    src_arr = item.mask if values is None else np.asarray(values)
    out = np.zeros((y1 - y0, x1 - x0), bool) if values is None else \
        np.full((y1 - y0, x1 - x0), 255, src_arr.dtype)
    out[np.ix_(oky, okx)] = src_arr[np.ix_(sy[oky], sx[okx])]
    return y0, x0, out


def _paste(out: np.ndarray, y: int, x: int, m: np.ndarray) -> None:
    h, w = out.shape
    ys, xs = max(y, 0), max(x, 0)
    ye, xe = min(y + m.shape[0], h), min(x + m.shape[1], w)
    if ye > ys and xe > xs:
        out[ys:ye, xs:xe] |= m[ys - y:ye - y, xs - x:xe - x]


def write_decision(store: Any, item: QueueItem, decision: Decision,
                   geometry: MaskGeometry) -> int:
    """Write a decision into an ``EditStore``: the item's pixels get the label (accept /
    relabel) or lose their edits (exclude). Returns the number of store pixels touched."""
    dst = MaskGeometry(downsample=float(store.downsample))
    y, x, m = resample_item(item, geometry, dst)
    if decision.action == EXCLUDE:
        return int(store.clear(y, x, m.shape[0], m.shape[1], mask=m))
    labels = np.full(m.shape, int(decision.label), np.uint8)  # type: ignore[arg-type]
    return int(store.write(y, x, labels, edited_mask=m))


def write_labels(store: Any, item: QueueItem, labels: np.ndarray,
                 geometry: MaskGeometry) -> int:
    """Write painted labels ``uint8 (h, w)`` over the item's box (255 = not painted) into an
    ``EditStore``; returns the number of store pixels written."""
    r0, c0, h, w = item.box
    labels = np.asarray(labels, np.uint8)
    if labels.shape != (h, w):
        raise WsssError(f"painted labels {labels.shape} do not match the item's box {(h, w)}")
    y, x, lab = resample_item(item, geometry, MaskGeometry(downsample=float(store.downsample)),
                              values=labels)
    return int(store.write(y, x, lab))
