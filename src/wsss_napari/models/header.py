"""The checkpoint file format: a safetensors header holding the model's config.

A leaf of ``models/``: :mod:`.checkpoint` (save / load), :mod:`.pretrained` and
:mod:`.backbone` read headers from here without importing the builders.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from .. import WsssError
from .config import ModelConfig

FORMAT_VERSION = "1"
META_KEY = "wsss_napari"
_MAX_HEADER = 100 * 1024 * 1024


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
