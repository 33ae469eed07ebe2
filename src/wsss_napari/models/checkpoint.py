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
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import WsssError
from .config import ModelConfig

if TYPE_CHECKING:
    from torch import nn

    from ..params import PostprocParams

FORMAT_VERSION = "1"
META_KEY = "wsss_napari"
_MAX_HEADER = 100 * 1024 * 1024


def default_model_path() -> Path:
    """Where the shipped default CAM model lives (inside the installed package)."""
    return Path(__file__).resolve().parent / "default" / "cam_default.safetensors"


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


def read_header(path: str | Path) -> dict[str, Any]:
    """Parse and check a safetensors header without reading the tensors.

    Returns:
        The header dict (tensor entries plus ``__metadata__``).

    Raises:
        WsssError: missing / empty / pickled / truncated / corrupt file.
    """
    p = Path(path)
    if not p.exists():
        raise WsssError(f"model file not found: '{p}'")
    if not p.is_file():
        raise WsssError(f"model path is not a file: '{p}'")
    size = p.stat().st_size
    if size == 0:
        raise WsssError(f"model file '{p}' is empty")
    with open(p, "rb") as fh:
        head = fh.read(9)
        # a safetensors header length may start with 0x80 too; its JSON then starts with '{'
        if (head[:1] == b"\x80" or head[:4] == b"PK\x03\x04") and head[8:9] != b"{":
            raise WsssError(
                f"'{p}' is a PyTorch pickle/zip checkpoint, not a wsss-napari checkpoint; "
                "only .safetensors files are loaded (pickles can run code and are never opened)"
            )
        if len(head) < 8:
            raise WsssError(f"'{p}' is not a wsss-napari checkpoint / corrupt (too short)")
        (n,) = struct.unpack("<Q", head[:8])
        if n <= 0 or n > _MAX_HEADER or n > size - 8:
            raise WsssError(f"'{p}' is not a wsss-napari checkpoint / corrupt "
                            "(no valid safetensors header)")
        fh.seek(8)
        raw = fh.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise WsssError(f"'{p}' is not a wsss-napari checkpoint / corrupt "
                        f"(header unreadable: {err})") from err
    if not isinstance(header, dict):
        raise WsssError(f"'{p}' is not a wsss-napari checkpoint / corrupt (bad header)")
    data_len = size - 8 - n
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offs = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not offs or len(offs) != 2 or not 0 <= offs[0] <= offs[1] <= data_len:
            raise WsssError(f"'{p}' is not a wsss-napari checkpoint / corrupt (tensor {name!r} "
                            "lies beyond the end of the file: truncated download?)")
    return header


def read_config(path: str | Path) -> ModelConfig:
    """The :class:`ModelConfig` stored in a checkpoint (cheap: reads only the header)."""
    header = read_header(path)
    meta = header.get("__metadata__") or {}
    if META_KEY not in meta:
        raise WsssError(
            f"'{path}' is a safetensors file but not a wsss-napari checkpoint (no model config "
            "in its header). Plain timm weights can initialise a backbone: use --weights FILE"
        )
    fmt = meta.get("format_version", "?")
    if fmt != FORMAT_VERSION:
        raise WsssError(f"'{path}' has checkpoint format {fmt!r}; this wsss-napari reads "
                        f"format {FORMAT_VERSION!r} (update wsss-napari)")
    try:
        data = json.loads(meta[META_KEY])
    except json.JSONDecodeError as err:
        raise WsssError(f"'{path}': the stored model config is corrupt ({err})") from err
    try:
        return ModelConfig.from_dict(data)
    except WsssError as err:
        raise WsssError(f"'{path}': invalid model config: {err}") from err


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


# ---------------------------------------------------------------- backbone initialisation

_PREFIXES = ("module.", "model.", "backbone.", "encoder.", "state_dict.")


def _read_plain_weights(path: Path) -> dict[str, Any]:
    import torch

    if not path.is_file() or path.stat().st_size == 0:
        raise WsssError(f"weights file not found or empty: '{path}'")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        read_header(path)
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise WsssError(f"weights file '{path}' is corrupt ({err})") from err
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - unpickling refusals come in several types
        raise WsssError(f"cannot read weights '{path}' safely (only safetensors or plain "
                        f"tensor dicts are accepted): {err}") from err
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise WsssError(f"weights file '{path}' holds no tensor dict")
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def _norm_key(k: str) -> str:
    for pre in _PREFIXES:
        if k.startswith(pre):
            k = k[len(pre):]
    # timm's features_only wrappers flatten 'stages.0' into 'stages_0'
    return k.replace(".", "_")


def load_backbone_weights(module: nn.Module, path: str | Path) -> dict[str, Any]:
    """Initialise ``module`` from a file of plain timm weights, non-strictly.

    Names are matched after removing wrapper prefixes (``module.``, ``backbone.`` ...) and
    treating ``.`` and ``_`` alike (timm's ``features_only`` models rename ``stages.0`` to
    ``stages_0``); tensors of another shape (e.g. an ImageNet head) are skipped.

    Returns:
        ``{'loaded': n, 'missing': n, 'unexpected': n, 'skipped_shape': n}``.

    Raises:
        WsssError: unreadable file, or one that matches none of the module's tensors.
    """
    p = Path(path).expanduser()
    src = _read_plain_weights(p)
    by_norm = {_norm_key(k): v for k, v in src.items()}
    own = module.state_dict()
    new, used, skipped = {}, set(), 0
    for k, v in own.items():
        nk = _norm_key(k)
        t = by_norm.get(nk)
        if t is None:
            continue
        if tuple(t.shape) != tuple(v.shape):
            skipped += 1
            continue
        new[k] = t
        used.add(nk)
    if not new:
        raise WsssError(f"weights file '{p}' matches none of the {len(own)} backbone tensors "
                        f"(wrong architecture? first keys: {', '.join(list(src)[:3])})")
    module.load_state_dict(new, strict=False)
    return {"loaded": len(new), "missing": len(own) - len(new),
            "unexpected": len(by_norm) - len(used), "skipped_shape": skipped}
