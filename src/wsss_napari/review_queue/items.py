"""Queue items and reviewer decisions (the records a :class:`ReviewQueue` holds and saves)."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import WsssError
from ..classes import LABEL_NAMES
from ..region import Region

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
        score: what ranked it: the mean uncertainty of its pixels, or their mean expected
            gain (``UncertaintyParams.score``).
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
                "mask": pack_mask(self.mask), "region": self.region.to_dict(),
                "area_px": self.area_px, "area_mm2": self.area_mm2, "cls": self.cls,
                "runner_up": self.runner_up, "probs": list(self.probs), "score": self.score}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QueueItem:
        box = tuple(int(v) for v in d["box"])
        return cls(id=str(d["id"]), rank=int(d["rank"]), box=box,  # type: ignore[arg-type]
                   mask=unpack_mask(d["mask"], box[2], box[3]),
                   region=Region.from_dict(d["region"]), area_px=int(d["area_px"]),
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


def pack_mask(mask: np.ndarray) -> str:
    return base64.b64encode(np.packbits(np.asarray(mask, bool).ravel()).tobytes()).decode()


def unpack_mask(text: str, h: int, w: int) -> np.ndarray:
    bits = np.unpackbits(np.frombuffer(base64.b64decode(text), np.uint8), count=h * w)
    return bits.reshape(h, w).astype(bool)


