"""Fine-tune on a slide's corrections and keep the result as a new model version.

The review widget and ``wsss-napari fine-tune`` both call :func:`finetune_version`: the
fine-tuned copy is saved with :func:`~wsss_napari.models.versioning.save_version` as
``<name>-v<N>-<hash8>.safetensors`` beside its earlier versions, with its parent's hash and
what it learned from (slides, level-0 regions, labelled pixels, parameters) in its config.
:func:`edit_samples` turns an edit store (``<slide>.wsss/edits.zarr``) into training samples:
every edited tile with the slide's RGB under it.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import WsssError
from ..params import FinetuneParams
from ..progress import Progress
from ..region import Region


def edit_samples(store: Any, slide: Any) -> tuple[list[tuple[np.ndarray, np.ndarray]],
                                                  list[Region]]:
    """``(rgb, labels)`` of every edited tile of ``store`` (labels ``255`` where unedited, and
    on the items the slide's review queue excluded) and the level-0 region of each.

    Args:
        store: an open :class:`~wsss_napari.corrections.store.EditStore`.
        slide: the :class:`~wsss_napari.io.slide.Slide` the store belongs to.
    """
    from ..corrections.store import UNEDITED
    from ..inference.slide_mask import region_rgb
    from ..review_queue import ReviewQueue, queue_path

    qpath = queue_path(store.root)  # the review queue's excluded items stay out
    queue = ReviewQueue.load(qpath) if qpath.is_file() else None
    samples, regions = [], []
    for t in store.edited_tiles(rescan=True):
        labels = np.array(store.read(t.y, t.x, t.h, t.w), np.uint8)
        geo = store.geometry.crop(t.y, t.x)  # the tile's place on the slide
        if queue is not None:
            labels[queue.exclusion_mask(labels.shape, geo.downsample, (geo.y, geo.x))] = UNEDITED
        if not (labels != UNEDITED).any():
            continue
        samples.append((region_rgb(slide, geo, labels.shape), labels))
        regions.append(geo.region(labels.shape))
    if not samples:
        raise WsssError(f"the edit store '{store.root}' holds no corrections yet: paint some "
                        "in napari (Review and fine-tune) first")
    return samples, regions


def finetune_version(model: Any, samples: Sequence[tuple[np.ndarray, np.ndarray]],
                     params: FinetuneParams, models_dir: str | os.PathLike, *,
                     slides: Sequence[str], regions: Sequence[Region],
                     control: Any = None) -> Generator[Progress, None, tuple[Any, Path]]:
    """Fine-tune a copy of ``model`` on ``samples`` and save it as the next version.

    Args:
        model: a loaded model (its ``file_hash`` becomes the new version's ``parent_hash``).
        samples: ``(rgb, labels)`` pairs (see :func:`wsss_napari.train.finetune.finetune`).
        params: fine-tuning parameters.
        models_dir: folder of the versions (created).
        slides: the slides the samples come from (provenance).
        regions: the level-0 region of each sample (provenance).
        control: a :class:`~wsss_napari.train.finetune.FinetuneControl` (pause/stop).

    Yields:
        the fine-tuning's :class:`Progress`.

    Returns:
        ``(fine-tuned model, path of the new version)``.
    """
    from ..models.versioning import save_version
    from .finetune import finetune

    result = yield from finetune(model, samples, params, control=control)
    summary = result.summary(slides=[str(s) for s in slides],
                             regions=[r.to_dict() for r in regions])
    path = save_version(result.model, models_dir, getattr(model, "file_hash", ""), summary)
    return result.model, Path(path)
