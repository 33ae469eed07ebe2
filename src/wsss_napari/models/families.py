"""The model families: the one list of (kind, arch) that everything reads.

:class:`ModelConfig` validation, :func:`~wsss_napari.models.registry.build_model`, the
segmentation decoders of :class:`~wsss_napari.models.seg.SegNet`, ``TrainSegParams.decoder``
(hence the CLI's ``--decoder`` choices and the widgets' combo box) all come from
:data:`FAMILIES`; adding a family is one entry here plus its class. A leaf module: no torch,
no imports from this package, so every layer may read it.
"""

from __future__ import annotations

from dataclasses import dataclass

KINDS = ("cam", "seg")


@dataclass(frozen=True)
class Family:
    """One buildable architecture.

    Attributes:
        kind: ``'cam'`` (classifier producing class activation maps) or ``'seg'``.
        arch: the name stored in :attr:`ModelConfig.arch` and used on the CLI.
        module: module of this package that holds ``cls`` (e.g. ``'cam'``).
        cls: the ``nn.Module`` built for a config of this family.
        head: for ``kind='seg'``, the decoder class in ``module`` that ``cls`` puts on the
            encoder (constructor ``(channels, reductions, n_out)``).
        summary: one line for help texts.
    """

    kind: str
    arch: str
    module: str
    cls: str
    head: str = ""
    summary: str = ""


FAMILIES: tuple[Family, ...] = (
    Family("cam", "camnet", "cam", "CamNet",
           summary="last-3-stage fusion + 1x1 classifier (CNN backbones)"),
    Family("cam", "gradcam", "gradcam", "GradCamNet",
           summary="timm classifier whose maps come from Grad-CAM (ViT / hybrid backbones)"),
    Family("seg", "deeplabv3plus", "seg", "SegNet", head="_DeepLabV3PlusHead",
           summary="DeepLabV3+ decoder"),
    Family("seg", "unet", "seg", "SegNet", head="_UNetHead", summary="UNet decoder"),
    Family("seg", "segformer", "seg", "SegNet", head="_SegFormerHead",
           summary="SegFormer-style all-MLP decoder"),
)


def archs(kind: str) -> tuple[str, ...]:
    """The architecture names of ``kind`` (``'cam'`` or ``'seg'``), in registry order."""
    return tuple(f.arch for f in FAMILIES if f.kind == kind)


def family(kind: str, arch: str) -> Family | None:
    """The family of ``(kind, arch)``; ``None`` when there is none."""
    return next((f for f in FAMILIES if f.kind == kind and f.arch == arch), None)


#: CAM architectures (``kind='cam'``).
CAM_ARCHS = archs("cam")
#: Segmentation decoders (``kind='seg'``).
SEG_ARCHS = archs("seg")
