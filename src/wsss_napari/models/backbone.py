"""Backbones: timm models with user-facing errors, and their initialisation from weight files.

Shared by every family (:mod:`.cam`, :mod:`.gradcam`, :mod:`.seg`); imports neither them nor
:mod:`.checkpoint`, so ``models/`` has no import cycle.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import WsssError
from .header import read_header

if TYPE_CHECKING:
    from torch import nn


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the timm weight hub (huggingface.co) answers at all (fails fast offline)."""
    import os
    import socket

    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout):
            return True
    except OSError:
        return False


def _create_timm(name: str, pretrained: bool, **kw: Any) -> nn.Module:
    """timm.create_model with user-facing errors for unknown names and offline hubs.

    ``pretrained`` uses the local ImageNet weights (:mod:`.pretrained`) where the backbone has
    them (no network), else the timm hub.
    """
    import timm

    from .pretrained import has_local_weights, load_imagenet, no_local_weights_message

    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('.')[0][:6]}*")[:5]
        hint = f" (similar: {', '.join(close)})" if close else ""
        raise WsssError(f"unknown timm backbone {name!r}{hint}")
    local = pretrained and has_local_weights(name)
    if pretrained and not local and not _hub_reachable():
        raise WsssError(no_local_weights_message(name) + "; the timm hub is unreachable "
                        "(offline), so --pretrained cannot download them")
    try:
        model = timm.create_model(name, pretrained=pretrained and not local, **kw)
    except WsssError:
        raise
    except Exception as err:  # noqa: BLE001 - hub/network errors come in many types
        if pretrained:
            raise WsssError(
                f"could not download pretrained weights for {name} (offline?); "
                f"use --weights FILE ({type(err).__name__}: {err})"
            ) from err
        raise WsssError(f"could not build timm model {name!r}: {err}") from err
    if local:
        load_imagenet(model, name)
    return model


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
