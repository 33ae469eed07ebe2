"""The one cache folder of wsss-napari (sample slides, whole-slide CAM stores).

``$WSSS_CACHE_DIR`` when set, else ``$XDG_CACHE_HOME/wsss-napari`` or ``~/.cache/wsss-napari``.
One variable for every kind of cached file, so a user (or a test) moves all of it at once.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(sub: str = "") -> Path:
    """The cache folder, or its ``sub`` folder (not created here)."""
    env = os.environ.get("WSSS_CACHE_DIR")
    if env:
        root = Path(env)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        root = (Path(xdg) if xdg else Path.home() / ".cache") / "wsss-napari"
    return root / sub if sub else root
