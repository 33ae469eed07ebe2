"""What fine-tuning may learn from a reviewed region: "exclude" keeps pixels out of it.

An ``exclude`` decision (ambiguous region) clears the item's edits, so its pixels are no
correction; but a caller that also learns from the CAM pseudo-labels outside the edited
pixels (``FinetuneParams.pseudo_elsewhere``) would otherwise label them with the map's
class again. :func:`finetune_labels` is the one place that builds the targets: edits, the
map elsewhere when asked, and ``255`` (ignored) on every excluded pixel.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..region import MaskGeometry
from .queue import ReviewQueue, queue_path

IGNORE = 255  # train.finetune.IGNORE: pixels no loss sees


def excluded_pixels(edit_store_root: str | Path, geometry: MaskGeometry,
                    shape: tuple[int, int]) -> np.ndarray:
    """bool ``shape`` mask of the pixels (on the grid ``geometry``: level-0 origin and
    downsample) that the slide's saved review queue (beside its edit store) excluded; all
    False when the slide has no queue."""
    path = queue_path(edit_store_root)
    if not path.is_file():
        return np.zeros(shape, bool)
    queue = ReviewQueue.load(path)
    return queue.exclusion_mask(shape, geometry.downsample, (geometry.y, geometry.x))


def finetune_labels(corrected: np.ndarray, edited: np.ndarray, *, pseudo_elsewhere: bool,
                    excluded: np.ndarray | None = None) -> np.ndarray:
    """Fine-tuning targets ``uint8`` of a region: ``corrected`` (labels 0..3: the edits, the
    map's class elsewhere) where ``edited`` (or everywhere with ``pseudo_elsewhere``),
    ``255`` elsewhere and always on ``excluded`` pixels."""
    keep = np.asarray(edited, bool) | bool(pseudo_elsewhere)
    if excluded is not None:
        keep = keep & ~np.asarray(excluded, bool)
    return np.where(keep, corrected, IGNORE).astype(np.uint8)
