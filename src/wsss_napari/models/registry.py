"""Build a model from its :class:`ModelConfig`: the one place that maps (kind, arch) to a class."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from .. import WsssError
from .config import ModelConfig
from .families import family

if TYPE_CHECKING:
    from torch import nn

#: timm modules whose models produce tokens: CAMs come from Grad-CAM for these.
_TOKEN_MODULES = ("vision_transformer", "deit", "beit", "eva", "cait", "xcit", "crossvit",
                  "tnt", "volo", "vitamin", "hiera", "naflexvit", "hybrid")


def _register_own_models() -> None:
    """Register this package's timm models (``wsss_hybrid_*``, models.hybrid) with timm."""
    from . import hybrid  # noqa: F401 - importing registers them


def default_arch(backbone: str) -> str:
    """``'gradcam'`` for transformer (token) backbones, ``'camnet'`` for CNNs.

    Hybrid CNN-Transformer models of ``vision_transformer_hybrid`` count as transformers.
    """
    import timm

    _register_own_models()
    if not timm.is_model(backbone):
        raise WsssError(f"unknown timm backbone {backbone!r}")
    module = timm.models.model_entrypoint(backbone).__module__.rsplit(".", 1)[-1]
    return "gradcam" if any(module.startswith(t) for t in _TOKEN_MODULES) else "camnet"


def build_model(config: ModelConfig, pretrained: bool = False,
                weights: str | None = None) -> nn.Module:
    """A freshly initialised model for ``config`` (train mode, CPU, float32).

    Args:
        config: what to build (``kind`` / ``arch`` / ``backbone`` / classes ...).
        pretrained: initialise the backbone from the timm hub (needs internet; a clear
            :class:`WsssError` offline).
        weights: initialise the backbone from a local plain-timm weights file instead.

    Raises:
        WsssError: unknown kind / arch / backbone, unreachable hub, or a weights file that
            matches none of the backbone's parameters.
    """
    if not isinstance(config, ModelConfig):
        raise WsssError(f"build_model needs a ModelConfig, not {type(config).__name__}")
    _register_own_models()
    if config.kind == "seg":
        from .ensemble import SegEnsemble, ensemble_size

        if ensemble_size(config):
            return SegEnsemble(config, pretrained=pretrained, weights=weights)
    fam = family(config.kind, config.arch)
    if fam is None:
        raise WsssError(f"no model for kind={config.kind!r} arch={config.arch!r}")
    try:
        cls = getattr(import_module(f".{fam.module}", __package__), fam.cls)
    except ImportError as err:
        raise WsssError(f"{fam.kind} models ({fam.arch}) are not available in this install "
                        f"(wsss_napari.models.{fam.module}: {err})") from err
    return cls(config, pretrained=pretrained, weights=weights)


def build_fresh_model(kind: str, arch: str, backbone: str, input_size: int,
                      pretrained: bool = False, weights: str | None = None,
                      mpp: float | None = None) -> nn.Module:
    """A fresh model to train (``train-cls`` / ``train-seg``), its input scaling following
    where the backbone's weights come from (:func:`~wsss_napari.models.pretrained.input_norm`):
    the scaling ImageNet weights were trained with (mean = std = 0.5 for EfficientNet-Lite),
    else the H&E statistics."""
    from .pretrained import input_norm

    norm = input_norm(backbone, pretrained, weights or None)
    config = ModelConfig(kind=kind, arch=arch, backbone=backbone, input_size=input_size,
                         mpp=mpp or None, **({"mean": norm[0], "std": norm[1]} if norm else {}))
    return build_model(config, pretrained=pretrained, weights=weights or None)
