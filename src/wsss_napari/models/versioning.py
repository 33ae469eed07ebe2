"""Versioned checkpoints of fine-tuned models: ``<name>-v<N>-<hash8>.safetensors``.

Each fine-tuning run that is kept becomes a new file; nothing is overwritten. The file's
config records its parent's sha256 (``parent_hash``) and the data it saw (``extra
['finetune']``), so the lineage of any model can be followed back to the shipped one, and
an old version can be re-applied to compare.
"""

from __future__ import annotations

import datetime as _dt
import glob
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import WsssError, __version__

_PATTERN = re.compile(r"^(?P<name>.+)-v(?P<n>\d+)-(?P<hash>[0-9a-f]{8})\.safetensors$")


@dataclass(frozen=True)
class ModelVersion:
    """One versioned checkpoint found by :func:`list_versions`."""

    path: Path
    name: str
    number: int
    hash8: str
    parent_hash: str
    created: str
    finetune: dict[str, Any]


def base_name(path_or_name: str | os.PathLike) -> str:
    """The model name without a ``-v<N>-<hash8>`` suffix (``'cam-v3-0a1b2c3d'`` -> ``'cam'``)."""
    stem = Path(str(path_or_name)).name.removesuffix(".safetensors")
    m = _PATTERN.match(stem + ".safetensors")
    return m.group("name") if m else stem


def save_version(model: Any, models_dir: str | os.PathLike, parent_hash: str,
                 data_summary: dict[str, Any], name: str | None = None) -> Path:
    """Save a fine-tuned model as the next version in ``models_dir``, atomically.

    Args:
        model: the fine-tuned model (with ``.config``), e.g. ``FinetuneResult.model``.
        models_dir: folder of versions (created if needed).
        parent_hash: sha256 of the checkpoint it was fine-tuned from (``model.file_hash`` of a
            loaded model); ``''`` if unknown.
        data_summary: what it learned from (``FinetuneResult.summary(slides=[...])``).
        name: model name; default: the parent's file name without its version suffix, else
            ``<kind>-<backbone>``.

    Returns:
        Path of the new ``<name>-v<N>-<hash8>.safetensors`` (N = 1 + the highest N of that
        name in the folder). The file appears under its final name only when complete.
    """
    from ..io.atomic import check_writable_dir
    from .checkpoint import save_model

    config = getattr(model, "config", None)
    if config is None:
        raise WsssError("save_version needs a wsss-napari model (with .config)")
    d = check_writable_dir(models_dir)
    if name is None:
        src = getattr(model, "source", None)
        name = base_name(src) if src else f"{config.kind}-{config.backbone}"
    name = re.sub(r"[^A-Za-z0-9_.+-]", "_", name).strip("._") or "model"
    number = 1 + max((v.number for v in list_versions(d) if v.name == name), default=0)
    created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    original = config
    tmp_dir = Path(tempfile.mkdtemp(prefix=".saving-", dir=d))
    try:
        while True:  # claim the next free number; never replace a file
            while any(d.glob(f"{glob.escape(name)}-v{number}-*.safetensors")):
                number += 1
            extra = {**original.extra, "finetune": data_summary, "name": name,
                     "model_version": number}
            model.config = original.replace(parent_hash=parent_hash or "", extra=extra,
                                            version=__version__, created=created)
            try:
                digest = save_model(model, tmp_dir / "model.safetensors")
            finally:
                model.config = original
            target = d / f"{name}-v{number}-{digest[:8]}.safetensors"
            try:
                os.link(tmp_dir / "model.safetensors", target)
                break
            except FileExistsError:
                number += 1
            except OSError as err:
                raise WsssError(f"could not save the model version in '{d}': "
                                f"{err.strerror or err}") from err
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return target


def list_versions(models_dir: str | os.PathLike) -> list[ModelVersion]:
    """Versioned checkpoints in ``models_dir``, sorted by name then version number."""
    from .checkpoint import read_config

    d = Path(models_dir)
    if not d.is_dir():
        return []
    out = []
    for p in d.iterdir():
        m = _PATTERN.match(p.name)
        if not m or not p.is_file():
            continue
        try:
            cfg = read_config(p)
        except WsssError:
            continue  # not ours or damaged: not a version
        out.append(ModelVersion(path=p, name=m.group("name"), number=int(m.group("n")),
                                hash8=m.group("hash"), parent_hash=cfg.parent_hash,
                                created=cfg.created,
                                finetune=dict(cfg.extra.get("finetune") or {})))
    return sorted(out, key=lambda v: (v.name, v.number))
