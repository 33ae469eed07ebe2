"""A ranked queue of the regions a pathologist should look at first, and their decisions.

:func:`build_queue` cuts an :class:`~wsss_napari.uncertainty.UncertaintyMap` into items and
ranks them by their mean uncertainty, or (``UncertaintyParams.score='expected_gain'``) by
the expected mIoU gain of correcting them per area looked at
(:func:`~wsss_napari.uncertainty.expected_gain_map`: expected wrong pixels, errors of rare
classes weighted up):

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
queue, and :func:`finetune_labels` keeps its pixels out of fine-tuning (also when the
pseudo-labels elsewhere are learned). Labels are in the challenge encoding (0 tumor,
1 stroma, 2 normal, 3 background).

Modules: ``items`` (QueueItem, Decision), ``build`` (build_queue, slide_queue), ``queue``
(ReviewQueue: navigation, decisions, JSON, CSV / GeoJSON), ``grid`` (items on other pixel
grids, decisions into an edit store), ``training`` (the fine-tuning targets).
"""

from .build import build_queue, slide_queue
from .grid import resample_item, write_decision, write_labels
from .items import (
    ACCEPT,
    DECISIONS,
    EXCLUDE,
    FORMAT,
    FORMAT_VERSION,
    QUEUE_FILE,
    RELABEL,
    Decision,
    QueueItem,
)
from .queue import ReviewQueue, queue_path, same_slide
from .training import excluded_pixels, finetune_labels

__all__ = ["ACCEPT", "DECISIONS", "EXCLUDE", "FORMAT", "FORMAT_VERSION", "QUEUE_FILE",
           "RELABEL", "Decision", "QueueItem", "ReviewQueue", "build_queue",
           "excluded_pixels", "finetune_labels", "queue_path", "resample_item", "same_slide",
           "slide_queue", "write_decision", "write_labels"]
