"""Parameters of training: the CAM classifier, the segmenter and fine-tuning on corrections."""

from __future__ import annotations

from dataclasses import dataclass

from .. import WsssError
from ..models.families import FAMILIES, SEG_ARCHS
from .base import ParamsBase, _f


@dataclass(frozen=True)
class TrainClsParams(ParamsBase):
    """Stage 1: the CAM classifier trained from patch-level multi-labels."""

    backbone: str = _f("tf_efficientnet_lite0", "timm backbone name (the default has local "
                       "ImageNet weights and trains on a CPU)")
    epochs: int = _f(6, "training epochs", (1, 10_000))
    batch_size: int = _f(20, "patches per step", (1, 4096))
    lr: float = _f(1e-2, "SGD learning rate (polynomial decay)", (1e-7, 10.0))
    momentum: float = _f(0.9, "SGD momentum", (0.0, 1.0))
    weight_decay: float = _f(1e-4, "SGD weight decay", (0.0, 1.0))
    crop_size: int = _f(224, "training crop size (px)", (16, 4096))
    crop_scale_min: float = _f(0.25, "RandomResizedCrop minimum area scale", (0.01, 1.0))
    rot90: bool = _f(False, "also rotate crops by random multiples of 90 degrees")
    balance: bool = _f(False, "draw patches of rare classes more often (1/sqrt(positives))")
    cutmix: float = _f(0.0, "probability of label-consistent CutMix", (0.0, 1.0))
    mosaic: float = _f(0.0, "probability of a mosaic of single-label patches", (0.0, 1.0))
    stain_jitter: float = _f(0.03, "HED stain jitter strength; 0 disables", (0.0, 0.5))
    puzzle: float = _f(0.0, "Puzzle-CAM: weight of the tile-vs-whole CAM consistency (L1) "
                       "loss, ramped up over the first half; 0 disables", (0.0, 100.0))
    act_dropout: float = _f(0.75, "activation dropout (ADL): probability that a patch's most "
                            "activated feature positions are hidden from the classifier in "
                            "training, so its CAM spreads (CamNet backbones; --puzzle replaces "
                            "it); 0 disables", (0.0, 1.0))
    area_loss: float = _f(0.0, "area loss weight: each CAM position must agree with what the "
                          "patch label implies there (a single-label patch's class on its "
                          "tissue, absent classes nowhere); CamNet backbones; 0 disables",
                          (0.0, 100.0))
    val_fraction: float = _f(0.1, "fraction of patches held out for validation", (0.0, 0.9))
    seed: int = _f(0, "random seed", (0, 2**31 - 1))
    device: str = _f("auto", "auto, cuda, mps or cpu")
    amp: bool = _f(True, "mixed precision on CUDA")
    workers: int = _f(0, "data-loader worker processes", (0, 64))
    pretrained: bool = _f(True, "start from ImageNet weights (offline for (tf_)efficientnet_"
                          "lite0, lite1 and lite2; other backbones download from the hub; "
                          "--no-pretrained: random init)")
    weights: str = _f("", "local timm weights file (safetensors) to initialise the backbone")
    mpp: float = _f(0.0, "microns per pixel of the training patches; 0 = unknown", (0.0, 100.0))
    # issue 11 (SAM): see wsss_napari.train.sam
    optimizer: str = _f("sgd", "sgd, adamw, sam (SAM around SGD) or sam-adamw (two passes a step)")
    sam_rho: float = _f(0.05, "SAM neighbourhood radius rho", (1e-4, 10.0))
    # issue 11 (stain normalisation): see wsss_napari.stain
    stain_norm: str = _f("none", "stain normalisation of the patches: none, reinhard or "
                         "macenko (stored in the model; inference does the same)")
    stain_ref: str = _f("", "reference image or slide of the target stain; '' = the "
                        "training patches' pooled stain")

    def validate(self) -> None:
        _check_optimizer(self.optimizer)
        _check_stain(self.stain_norm)


def _check_optimizer(name: str) -> None:
    choices = ("sgd", "adamw", "sam", "sam-adamw")  # == train.sam.OPTIMIZERS (torch-free here)
    if name not in choices:
        raise WsssError(f"optimizer must be one of {', '.join(choices)}, not {name!r}")


def _check_stain(name: str) -> None:
    choices = ("none", "reinhard", "macenko")  # == stain.METHODS
    if name not in choices:
        raise WsssError(f"stain_norm must be one of {', '.join(choices)}, not {name!r}")


@dataclass(frozen=True)
class TrainSegParams(ParamsBase):
    """Stage 2: a segmentation network trained on pseudo-masks."""

    encoder: str = _f("tf_efficientnet_lite0", "timm encoder name (the train-cls default, so "
                      "--weights CAM_MODEL initialises it)")
    decoder: str = _f("deeplabv3plus", "segmentation decoder: "
                      + "; ".join(f"{f.arch} ({f.summary})" for f in FAMILIES if f.kind == "seg"),
                      choices=SEG_ARCHS)
    epochs: int = _f(20, "training epochs", (1, 10_000))
    batch_size: int = _f(8, "images per step", (1, 4096))
    lr: float = _f(1e-2, "SGD learning rate (polynomial decay)", (1e-7, 10.0))
    crop_size: int = _f(224, "training crop size (px)", (16, 4096))
    blur: float = _f(0.5, "probability of Gaussian blur augmentation", (0.0, 1.0))
    stain_jitter: float = _f(0.03, "HED stain jitter strength (with brightness / contrast), as "
                             "in train-cls; 0 disables", (0.0, 0.5))
    rot90: bool = _f(False, "also rotate crops by random multiples of 90 degrees")
    dice_weight: float = _f(1.0, "weight of the Dice term added to cross-entropy", (0.0, 100.0))
    mosaic: float = _f(0.0, "probability of a 2x2 mosaic of single-label patches with their "
                       "masks (exact multi-class training images)", (0.0, 1.0))
    balance: bool = _f(False, "draw patches of rare classes more often (1/sqrt(positives) of "
                       "the patch's rarest label, as train-cls --balance)")
    val_fraction: float = _f(0.1, "fraction held out for validation", (0.0, 0.9))
    seed: int = _f(0, "random seed", (0, 2**31 - 1))
    device: str = _f("auto", "auto, cuda, mps or cpu")
    amp: bool = _f(True, "mixed precision on CUDA")
    workers: int = _f(0, "data-loader worker processes", (0, 64))
    pretrained: bool = _f(False, "start from ImageNet weights (offline for (tf_)efficientnet_"
                          "lite0, lite1 and lite2; other encoders download from the hub)")
    weights: str = _f("", "local timm weights file (safetensors) to initialise the encoder")
    mpp: float = _f(0.0, "microns per pixel of the training patches; 0 = unknown", (0.0, 100.0))
    # issue 11 (SAM): see wsss_napari.train.sam
    optimizer: str = _f("sgd", "sgd, adamw, sam (SAM around SGD) or sam-adamw (two passes a step)")
    sam_rho: float = _f(0.05, "SAM neighbourhood radius rho", (1e-4, 10.0))
    # issue 11 (stain normalisation): see wsss_napari.stain
    stain_norm: str = _f("none", "stain normalisation of the patches: none, reinhard or "
                         "macenko (stored in the model; inference does the same)")
    stain_ref: str = _f("", "reference image or slide of the target stain; '' = the "
                        "training patches' pooled stain")
    # issue 11 (HuBMAP levers)
    loss: str = _f("ce+dice", "ce+dice (softmax) or bce+dice (one-vs-rest sigmoid per class)")

    def validate(self) -> None:
        if self.loss not in ("ce+dice", "bce+dice"):
            raise WsssError(f"loss must be ce+dice or bce+dice, not {self.loss!r}")
        _check_optimizer(self.optimizer)
        _check_stain(self.stain_norm)


@dataclass(frozen=True)
class FinetuneParams(ParamsBase):
    """Background fine-tuning on the pathologist's corrected regions."""

    steps: int = _f(50, "optimisation steps", (1, 100_000))
    lr: float = _f(1e-3, "learning rate (Adam)", (1e-7, 1.0))
    batch_size: int = _f(4, "crops per step", (1, 256))
    crop_size: int = _f(224, "crop size (px)", (16, 4096))
    pseudo_elsewhere: bool = _f(False, "also learn from CAM pseudo-labels outside edited pixels")
    seed: int = _f(0, "random seed", (0, 2**31 - 1))
    device: str = _f("auto", "auto, cuda, mps or cpu")

