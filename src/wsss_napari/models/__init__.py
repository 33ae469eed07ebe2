"""Models: CAM classifiers (CamNet, GradCamNet), segmentation nets and their checkpoints.

Importing this package is cheap; torch and timm load when a model is built or loaded.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {
    "ModelConfig": ".config",
    "build_model": ".registry",
    "default_arch": ".registry",
    "save_model": ".checkpoint",
    "load_model": ".checkpoint",
    "file_hash": ".checkpoint",
    "default_model_path": ".checkpoint",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(name)


__all__ = list(_LAZY)
