"""Stain-normalised training data: the patches of ``train-cls`` / ``train-seg`` mapped to one
target stain (``--stain-norm``, ``--stain-ref``), and the record the checkpoint keeps so that
inference normalises the same way (:func:`wsss_napari.stain.image_for_model`,
:func:`wsss_napari.stain.slide_for_model`). The colour science is in :mod:`wsss_napari.stain`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import WsssError, WsssWarning
from ..stain import METHODS, estimate_many, load_reference, normalizer_for_image

log = logging.getLogger(__name__)


def prepare_training_items(items: Sequence[Any], method: str, reference: str | Path | None,
                           cache_root: str | Path | None = None,
                           ) -> tuple[list[Any], dict[str, Any]]:
    """Stain-normalised copies of training patches, and the record for the checkpoint.

    The target is the ``reference`` image's stain, or (no reference) the pooled stain of up
    to 64 of the patches themselves. Each patch is normalised with its own estimate (a
    patch is the stain unit of a patch data set); patches with too little tissue are copied
    unchanged (one summarised warning). Copies go to a cache folder keyed by the patches,
    method and target, so a second run reuses them.

    Returns:
        ``(items, record)``: items pointing at the normalised PNGs (labels and masks kept),
        and ``{'method', 'target', 'fallback_patches'}`` for ``config.extra['stain']``.
    """
    from PIL import Image

    from ..cache import cache_dir
    from ..io.atomic import atomic_path

    if method not in ("reinhard", "macenko"):
        raise WsssError(f"stain_norm must be one of {METHODS}, not {method!r}")
    items = list(items)
    if reference:
        target = load_reference(reference)
    else:
        step = max(1, len(items) // 64)
        imgs = [np.asarray(Image.open(it.path).convert("RGB")) for it in items[::step][:64]]
        target = estimate_many(imgs, source="training patches")
    key = hashlib.sha256(json.dumps({
        "paths": [str(Path(it.path).resolve()) for it in items],
        "mtimes": [Path(it.path).stat().st_mtime_ns for it in items],
        "method": method, "target": target.to_dict()}, sort_keys=True).encode()).hexdigest()
    folder = Path(cache_root) / key[:24] if cache_root else cache_dir(f"stain-{key[:24]}")
    folder.mkdir(parents=True, exist_ok=True)
    out, fallback = [], 0
    for i, it in enumerate(items):
        dst = folder / f"{i:06d}.png"
        if not dst.is_file():
            rgb = np.asarray(Image.open(it.path).convert("RGB"))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", WsssWarning)
                norm = normalizer_for_image(method, target, rgb, str(it.path))
            fallback += norm.fallback
            with atomic_path(dst) as tmp:
                Image.fromarray(norm(rgb)).save(tmp, format="PNG")
        out.append(dataclasses.replace(it, path=dst))
    if fallback:
        warnings.warn(f"{fallback} of {len(items)} patches had too little stained tissue for "
                      "a stain estimate and were copied unchanged", WsssWarning, stacklevel=2)
    return out, {"method": method, "target": target.to_dict(), "fallback_patches": fallback}


def stain_training_items(params: Any, model: Any, train_items: Sequence[Any],
                         val_items: Sequence[Any]) -> tuple[list[Any], list[Any]]:
    """Training and validation items normalised per ``params.stain_norm`` /
    ``params.stain_ref`` (unchanged for ``none``), recording the target in
    ``model.config.extra['stain']`` so that inference normalises the same way."""
    method = getattr(params, "stain_norm", "none")
    if method == "none":
        return list(train_items), list(val_items)
    both, record = prepare_training_items([*train_items, *val_items], method,
                                          getattr(params, "stain_ref", "") or None)
    log.info("stain normalisation (%s) of %d patches; target from %s", method, len(both),
             record["target"]["source"])
    model.config = model.config.replace(extra={**model.config.extra, "stain": record})
    n = len(train_items)
    return both[:n], both[n:]
