"""CamNet: a multi-label tissue classifier whose class activation maps need no gradient.

The method this tool follows fuses the feature maps of the backbone's last three stages
(resized to the resolution of the earliest of them and concatenated), applies a 1x1
convolution (one filter per class, **no bias**) and global-average-pools the resulting class
maps into logits. Because pooling is the last step, ``logits == mean(class_maps)`` exactly,
and the CAM of a class is just ``relu(class_maps)``: one forward pass, no backward pass,
at stride 8 for most CNNs (finer than the usual stride-32 CAM).

No bias: a bias would be a constant added to every pixel of a class map, shifting the ReLU
threshold of the CAM without carrying any spatial evidence.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn import functional as F

from .. import WsssError
from .backbone import _create_timm, _hub_reachable, load_backbone_weights  # noqa: F401 - re-exported

if TYPE_CHECKING:
    from .config import ModelConfig


class CamModel(nn.Module):
    """What every CAM model offers (CamNet and GradCamNet): the contract inference relies on.

    Subclasses implement ``forward(x) -> logits (B, C)`` and ``class_maps(x) -> (B, C, h, w)``
    on normalised float input; :meth:`normalize` turns raw uint8 pixels (already on the
    device) into that input, so images travel to the GPU as bytes.
    """

    config: ModelConfig
    #: Output stride of the class maps relative to the input (e.g. 8).
    stride: int = 1
    #: Whether :meth:`class_maps` needs autograd (Grad-CAM) -- callers must not wrap it in
    #: ``torch.inference_mode``.
    needs_grad: bool = False

    def _init_norm(self, config: ModelConfig) -> None:
        self.config = config
        mean = torch.tensor(config.mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
        std = torch.tensor(config.std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
        # not persistent: they come from the config, not the weights
        self.register_buffer("pixel_mean", mean, persistent=False)
        self.register_buffer("pixel_std", std, persistent=False)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (or 0-255 float) ``(B, 3, H, W)`` -> normalised float32 input."""
        return (x.float() - self.pixel_mean) / self.pixel_std

    def normalize_(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`normalize` in place, for a float32 tensor of 0-255 pixels (no copy: the
        CAM engine normalises each scale's resized window this way); returns ``x``."""
        return x.sub_(self.pixel_mean).div_(self.pixel_std)

    def class_maps(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def cams(self, x: torch.Tensor) -> torch.Tensor:
        """Unnormalised CAMs ``relu(class_maps(x))`` of normalised input ``x``."""
        return F.relu(self.class_maps(x))

    def logits_and_cams(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both outputs from one pass (inference uses this)."""
        maps = self.class_maps(x)
        return maps.float().mean(dim=(2, 3)), F.relu(maps)


class CamNet(CamModel):
    """timm ``features_only`` backbone -> last-3-stage fusion -> 1x1 classifier -> GAP.

    Args:
        config: a ``kind='cam', arch='camnet'`` :class:`ModelConfig`.
        pretrained: start from ImageNet weights (local ones where the backbone has them,
            :mod:`.pretrained`; else the timm hub, which needs internet).
        weights: a local file of plain timm weights (safetensors or a ``weights_only``
            torch file) used to initialise the backbone.
    """

    def __init__(self, config: ModelConfig, pretrained: bool = False,
                 weights: str | None = None) -> None:
        super().__init__()
        self._init_norm(config)
        self.backbone = _create_timm(config.backbone, pretrained, features_only=True,
                                     out_indices=(-3, -2, -1))
        info = self.backbone.feature_info
        chans = info.channels()
        reds = info.reduction()
        if len(chans) < 1:
            raise WsssError(f"backbone {config.backbone!r} exposes no feature stages")
        self.feature_channels: list[int] = list(chans)
        self.feature_strides: list[int] = list(reds)
        #: the earliest of the fused stages sets the CAM resolution
        self.stride = int(min(reds))
        self.classifier = nn.Conv2d(sum(chans), config.num_classes, kernel_size=1, bias=False)
        nn.init.kaiming_normal_(self.classifier.weight, mode="fan_out", nonlinearity="relu")
        self.classifier.weight.data.mul_(0.1)
        self.load_report: dict[str, Any] | None = None
        if weights:
            self.load_report = load_backbone_weights(self.backbone, weights)

    def fused_features(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenated last-three-stage features at the earliest stage's resolution."""
        feats = self.backbone(x)
        size = feats[0].shape[-2:]
        for f in feats:  # the earliest stage has the largest map
            if f.shape[-2] * f.shape[-1] > size[0] * size[1]:
                size = f.shape[-2:]
        feats = [
            f if f.shape[-2:] == size else F.interpolate(f, size=size, mode="bilinear",
                                                         align_corners=False)
            for f in feats
        ]
        return torch.cat(feats, dim=1)

    def class_maps(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-pooling class score maps ``(B, C, H/stride, W/stride)``."""
        return self.classifier(self.fused_features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Image-level logits ``(B, C)`` = global average of :meth:`class_maps`."""
        return self.class_maps(x).mean(dim=(2, 3))
