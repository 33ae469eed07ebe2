"""Checkpoints: ONE ``.safetensors`` file holding the weights and the model's config.

Layout: the tensors of ``model.state_dict()`` plus header metadata
``{"wsss_napari": <ModelConfig JSON>, "format_version": "1", ...extra}``. Nothing is ever
unpickled: safetensors is plain data, so opening a file from a colleague cannot run code.
Loading validates in order -- file present, header parses, config present and valid,
backbone known to timm, tensor names and shapes equal to the rebuilt model's -- and each
failure is a :class:`WsssError` that says what is wrong and what to do.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import WsssError
from .backbone import load_backbone_weights
from .config import ModelConfig
from .header import FORMAT_VERSION, META_KEY, read_config, read_header

__all__ = [  # header / backbone names stay importable from here
    "FORMAT_VERSION", "META_KEY", "default_model_path", "default_seg_model_path", "file_hash",
    "load_backbone_weights",
    "load_model", "read_config", "read_header", "recommended_postproc", "save_model",
    "with_recommended_postproc",
]

if TYPE_CHECKING:
    from torch import nn

    from ..params import PostprocParams


def default_model_path() -> Path:
    """Where the shipped default CAM model lives (inside the installed package)."""
    return Path(__file__).resolve().parent / "default" / "cam_default.safetensors"


def default_seg_model_path() -> Path:
    """Where the shipped default segmentation model (stage 2 of the default CAM model) lives;
    it may be absent (``inference.mask_source`` then falls back to the CAM model)."""
    return Path(__file__).resolve().parent / "default" / "seg_default.safetensors"


def file_hash(path: str | Path) -> str:
    """Full sha256 hex digest of a file (show the first 16 characters, store all of it)."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except OSError as err:
        raise WsssError(f"cannot read '{path}': {err.strerror or err}") from err
    return h.hexdigest()


def save_model(model: nn.Module, path: str | Path, extra_meta: dict[str, Any] | None = None,
               half: bool = False) -> str:
    """Write ``model`` (weights + ``model.config``) to one safetensors file, atomically.

    Args:
        model: a CamNet / GradCamNet / SegNet (anything with a ``config: ModelConfig``).
        path: target file (``.safetensors``).
        extra_meta: more header entries (values are JSON-encoded unless already strings).
        half: store floating-point weights as float16 (half the size; loaded back as float32).

    Returns:
        The sha256 of the written file.
    """
    import torch
    from safetensors.torch import save_file

    from ..io.atomic import atomic_path

    config = getattr(model, "config", None)
    if not isinstance(config, ModelConfig):
        raise WsssError("save_model needs a model with a ModelConfig in .config")
    tensors = {}
    for name, t in model.state_dict().items():
        t = t.detach().to("cpu")
        if half and t.dtype == torch.float32:
            t = t.half()
        tensors[name] = t.contiguous().clone()  # clone: safetensors refuses shared storage
    meta = {META_KEY: json.dumps(config.to_dict()), "format_version": FORMAT_VERSION}
    for k, v in (extra_meta or {}).items():
        meta[str(k)] = v if isinstance(v, str) else json.dumps(v)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return file_hash(path)


def _resolve(path_or_default: str | Path) -> Path:
    if str(path_or_default) == "default":
        p = default_model_path()
        if not p.is_file():
            raise WsssError(
                f"the default CAM model is not installed (expected {p}). Re-create it with "
                "scripts/make_default_model.sh in a source checkout (models/default/"
                "MODEL_CARD.md), or pass a model file"
            )
        return p
    return Path(path_or_default).expanduser()


def load_model(path_or_default: str | Path, device: Any = "cpu") -> nn.Module:
    """Load a checkpoint written by :func:`save_model`, validated, in eval mode.

    Args:
        path_or_default: a ``.safetensors`` checkpoint, or ``'default'`` for the shipped model.
        device: where to put the model.

    Returns:
        The model (CamNet / GradCamNet / SegNet) with ``.config``, ``.file_hash`` (sha256)
        and ``.source`` (path) set.
    """
    import timm
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .registry import build_model

    p = _resolve(path_or_default)
    config = read_config(p)
    if not timm.is_model(config.backbone):
        raise WsssError(f"'{p}' needs backbone {config.backbone!r}, which this timm "
                        f"({timm.__version__}) does not know; update timm")
    try:
        tensors = load_file(str(p))
    except (SafetensorError, OSError, ValueError) as err:
        raise WsssError(f"'{p}' is not a wsss-napari checkpoint / corrupt ({err})") from err
    model = build_model(config)
    expected = model.state_dict()
    missing = [k for k in expected if k not in tensors]
    unexpected = [k for k in tensors if k not in expected]
    wrong = [f"{k} {tuple(tensors[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
             if k in tensors and tuple(tensors[k].shape) != tuple(v.shape)]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        if wrong:
            parts.append(f"{len(wrong)} of wrong shape (e.g. {'; '.join(wrong[:3])})")
        raise WsssError(f"'{p}': weights do not match a {config.arch} on {config.backbone} "
                        f"with {config.num_classes} classes: " + ", ".join(parts))
    model.load_state_dict(tensors, strict=True)  # copies cast float16 back to float32
    model.eval().to(device)
    model.file_hash = file_hash(p)
    model.source = str(p)
    return model


def save_ensemble(paths: Sequence[str | Path], out: str | Path, half: bool = False) -> str:
    """Load the segmentation models in ``paths`` and write them as one ensemble checkpoint
    (:mod:`.ensemble`: the mean of their probabilities) at ``out``, atomically; its sha256."""
    from .ensemble import build_ensemble

    models = [load_model(p) for p in paths]
    return save_model(build_ensemble(models, [str(p) for p in paths]), out, half=half)


# ------------------------------------------------------- recommended post-processing

#: ``config.extra`` key of the post-processing tuned for a model (``PostprocParams`` dict).
POSTPROC_KEY = "postproc"


def recommended_postproc(model: Any) -> PostprocParams:
    """The post-processing tuned for ``model`` (``PostprocParams()`` when it has none).

    Why: CAM value ranges differ from model to model, so the best background exponent, glass
    threshold etc. do too; ``wsss-napari tune --into-model`` stores them in the checkpoint
    and ``predict`` and the tuning widget start from them.

    Args:
        model: a loaded model (anything with ``.config``), a :class:`ModelConfig`, or a
            checkpoint path / ``'default'`` (only the header is read).
    """
    from ..params import PostprocParams

    if isinstance(model, (str, Path)):
        model = read_config(_resolve(model))
    config = model if isinstance(model, ModelConfig) else getattr(model, "config", None)
    stored = (getattr(config, "extra", None) or {}).get(POSTPROC_KEY)
    if not isinstance(stored, dict):
        return PostprocParams()
    try:  # fields added in later versions are ignored, missing ones keep their defaults
        return PostprocParams.from_dict(stored, strict=False)
    except WsssError as err:
        raise WsssError(f"the model's recommended post-processing is invalid: {err}") from err


def with_recommended_postproc(path: str | Path, params: PostprocParams,
                              info: dict[str, Any] | None = None) -> str:
    """Store ``params`` as the checkpoint's recommended post-processing, rewriting it atomically.

    The weights (and their dtypes) are copied unchanged; only ``config.extra['postproc']``
    (and ``config.extra['postproc_tune']`` = ``info``, e.g. the tuning data and its mIoU)
    change, so the file's hash changes too.

    Args:
        path: a checkpoint file, or ``'default'`` for the shipped model.
        params: the post-processing to recommend.
        info: provenance of ``params`` (JSON-serialisable), or None.

    Returns:
        The sha256 of the rewritten file.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load_file, save_file

    from ..io.atomic import atomic_path

    p = _resolve(path)
    config = read_config(p)
    meta = dict(read_header(p).get("__metadata__") or {})
    try:
        tensors = load_file(str(p))
    except (SafetensorError, OSError, ValueError) as err:
        raise WsssError(f"'{p}' is not a wsss-napari checkpoint / corrupt ({err})") from err
    extra = {**config.extra, POSTPROC_KEY: params.to_dict()}
    if info is not None:
        extra[POSTPROC_KEY + "_tune"] = info
    data = config.to_dict()
    data["extra"] = extra
    meta[META_KEY] = json.dumps(ModelConfig.from_dict(data).to_dict())
    with atomic_path(p) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return file_hash(p)
