"""Which model makes a tissue mask: a segmentation model, or CAMs + post-processing.

A stage-2 segmentation model (``train-seg`` on the CAM model's pseudo-masks) makes better
masks than the CAMs it learnt from (``models/default/MODEL_CARD.md``), so when the shipped
default segmentation model is installed, ``'default'`` makes masks with it; the CAM model
still gives the per-class CAM layers and the live post-processing sliders. One choice,
``mask_from``, spelt the same everywhere (``--mask-from`` of ``predict`` / ``slide`` /
``batch``, ``SlideSpec.mask_from``, the tuning widget's "Mask from"):

- ``auto`` (default): the segmentation model when one is given (``seg_model``, or MODEL is
  itself a segmentation checkpoint) or when MODEL is ``'default'`` and the default
  segmentation model is installed; otherwise the CAM model;
- ``seg``: a segmentation model (``seg_model``, MODEL if it is one, else the default one;
  an error when there is none);
- ``cam``: the CAM model's maps and post-processing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import WsssError

MASK_FROM = ("auto", "seg", "cam")


@dataclass(frozen=True)
class MaskSource:
    """The resolved choice: ``kind`` ``'seg'`` or ``'cam'``; ``model`` makes the mask
    (``'default'`` or a path); ``cam_model`` gives the CAMs (``None`` when MODEL is a
    segmentation model)."""

    kind: str
    model: str
    cam_model: str | None


def _kind(source: str) -> str:
    from ..models.checkpoint import _resolve, read_config

    return str(read_config(_resolve(source)).kind)


def default_seg_source() -> str | None:
    """The installed default segmentation model's path, or ``None``."""
    from ..models.checkpoint import default_seg_model_path

    p = default_seg_model_path()
    return str(p) if p.is_file() else None


def check_seg_source(source: str) -> str:
    """``source`` if its header says it is a segmentation model, else one clear line."""
    kind = _kind(source)
    if kind != "seg":
        raise WsssError(f"'{source}' is a {kind} model, not a segmentation model: a "
                        "segmentation mask needs a checkpoint made by 'wsss-napari train-seg'")
    return source


def resolve_mask_source(model: str = "default", mask_from: str = "auto",
                        seg_model: str | None = None) -> MaskSource:
    """Resolve ``mask_from`` for MODEL (see the module docstring); reads only headers."""
    if mask_from not in MASK_FROM:
        raise WsssError(f"mask_from must be one of {', '.join(MASK_FROM)}, not {mask_from!r}")
    model = str(model)
    if _kind(model) == "seg":
        if mask_from == "cam":
            raise WsssError(f"'{model}' is a segmentation model: masks from CAMs need a CAM "
                            "model (--mask-from cam with a CAM checkpoint)")
        if seg_model:
            raise WsssError(f"'{model}' is already a segmentation model; drop --seg-model")
        return MaskSource("seg", model, None)
    if mask_from == "cam":
        return MaskSource("cam", model, model)
    seg = str(seg_model) if seg_model else None
    if seg is None and (mask_from == "seg" or model == "default"):
        seg = default_seg_source()
    if seg is None:
        if mask_from == "seg":
            from ..models.checkpoint import default_seg_model_path

            raise WsssError("no segmentation model: the default one is not installed "
                            f"(expected {default_seg_model_path()}; make it with "
                            "scripts/make_default_model.sh --stage2-only) and none was given "
                            "(--seg-model FILE)")
        return MaskSource("cam", model, model)
    return MaskSource("seg", check_seg_source(seg), model)


def describe(src: MaskSource) -> str:
    """One line for the CLI: which model makes the masks."""
    name = Path(src.model).name if src.model != "default" else "default"
    if src.kind == "seg":
        return f"masks from the segmentation model {name}"
    return f"masks from the CAMs of {name} + post-processing"
