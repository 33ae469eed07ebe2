"""ModelConfig: what is needed to rebuild a model and feed it correctly (in every checkpoint).

A checkpoint is only useful if the same input normalisation, crop size, class order and
resolution (microns per pixel) are used at inference as in training; so these travel with the
weights instead of living in a separate file that can get lost.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
from dataclasses import dataclass, field
from typing import Any

from .. import WsssError, __version__
from ..classes import CLASS_NAMES, PALETTE
from .families import CAM_ARCHS, KINDS, SEG_ARCHS, archs

#: H&E statistics of the method this tool follows (WSSS4LUAD training patches), RGB in [0, 1].
HE_MEAN: tuple[float, float, float] = (0.678, 0.505, 0.735)
HE_STD: tuple[float, float, float] = (0.144, 0.208, 0.174)

__all__ = ["CAM_ARCHS", "HE_MEAN", "HE_STD", "KINDS", "SEG_ARCHS", "ModelConfig", "model_kind"]


def model_kind(model: Any) -> str | None:
    """``model.config.kind`` (``'cam'`` / ``'seg'``), or ``None`` for anything that is not a
    wsss-napari model: the one test every entry point makes before choosing a path."""
    return getattr(getattr(model, "config", None), "kind", None)



def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class ModelConfig:
    """How a model was built and must be fed.

    Attributes:
        kind: ``'cam'`` (classifier producing class activation maps) or ``'seg'``.
        arch: one of :data:`~wsss_napari.models.families.FAMILIES` of ``kind``
            (``'camnet'`` / ``'gradcam'`` for CAM models, a decoder for segmentation).
        backbone: timm model name (e.g. ``'resnet18'``).
        class_names: foreground classes, in output-channel order.
        class_colors: one RGB triple (0-255) per class, for display.
        input_size: crop edge in px the model was trained on (the default inference crop).
        mean: per-channel RGB mean (inputs in [0, 1]) subtracted before the network.
        std: per-channel RGB standard deviation.
        mpp: microns per pixel of the training images; ``None`` = unknown.
        version: wsss-napari version that made the model.
        created: ISO-8601 UTC time of creation.
        parent_hash: sha256 of the checkpoint this one was fine-tuned from ('' if none).
        extra: free-form JSON-serialisable information (training params, data set, ...).
    """

    kind: str = "cam"
    arch: str = "camnet"
    backbone: str = "resnet18"
    class_names: tuple[str, ...] = CLASS_NAMES
    class_colors: tuple[tuple[int, int, int], ...] = tuple(PALETTE[: len(CLASS_NAMES)])
    input_size: int = 224
    mean: tuple[float, float, float] = HE_MEAN
    std: tuple[float, float, float] = HE_STD
    mpp: float | None = None
    version: str = __version__
    created: str = field(default_factory=_now)
    parent_hash: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # normalise list -> tuple (JSON round trips give lists), then validate
        set_ = object.__setattr__
        set_(self, "class_names", tuple(str(c) for c in self.class_names))
        try:
            set_(self, "class_colors", tuple(tuple(int(v) for v in c) for c in self.class_colors))
            set_(self, "mean", tuple(float(v) for v in self.mean))
            set_(self, "std", tuple(float(v) for v in self.std))
        except (TypeError, ValueError) as err:
            raise WsssError(f"model config: bad class_colors / mean / std: {err}") from err
        if self.mpp is not None:
            set_(self, "mpp", float(self.mpp))
        set_(self, "extra", dict(self.extra or {}))
        self.validate()

    def validate(self) -> None:
        """Raise :class:`WsssError` when a field is out of its valid domain."""
        if self.kind not in KINDS:
            raise WsssError(f"model config: kind must be one of {KINDS}, not {self.kind!r}")
        valid = archs(self.kind)
        if self.arch not in valid:
            raise WsssError(f"model config: arch for kind {self.kind!r} must be one of {valid}, "
                            f"not {self.arch!r}")
        if not isinstance(self.backbone, str) or not self.backbone:
            raise WsssError("model config: backbone must be a timm model name")
        if not self.class_names or len(set(self.class_names)) != len(self.class_names):
            raise WsssError(f"model config: class_names must be unique and non-empty: "
                            f"{self.class_names}")
        if len(self.class_colors) != len(self.class_names) or any(
            len(c) != 3 or not all(0 <= v <= 255 for v in c) for c in self.class_colors
        ):
            raise WsssError("model config: class_colors needs one RGB triple (0-255) per class")
        if not isinstance(self.input_size, int) or not 16 <= self.input_size <= 4096:
            raise WsssError(f"model config: input_size must be an int in [16, 4096], "
                            f"not {self.input_size!r}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise WsssError("model config: mean and std need 3 values (RGB)")
        if any(not (s > 0 and math.isfinite(s)) for s in self.std) or any(
            not math.isfinite(m) for m in self.mean
        ):
            raise WsssError("model config: std must be positive and mean finite")
        if self.mpp is not None and not (0 < self.mpp < 1000 and math.isfinite(self.mpp)):
            raise WsssError(f"model config: mpp must be positive (microns per pixel), "
                            f"not {self.mpp!r}")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists)."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "class_colors":
                v = [list(c) for c in v]
            elif isinstance(v, tuple):
                v = list(v)
            out[f.name] = v
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Build from a dict, e.g. a checkpoint header; unknown keys go to ``extra``
        (a newer version may add fields) rather than failing."""
        if not isinstance(data, dict):
            raise WsssError("model config must be a mapping")
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        unknown = {k: v for k, v in data.items() if k not in names}
        if unknown:
            kwargs["extra"] = {**dict(kwargs.get("extra") or {}), "unknown_fields": unknown}
        try:
            return cls(**kwargs)
        except TypeError as err:
            raise WsssError(f"bad model config: {err}") from err

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)
