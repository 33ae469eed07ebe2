"""SegNet: the stage-2 segmentation network trained on pseudo-masks.

A timm ``features_only`` encoder with one of two light decoders:

* ``deeplabv3plus`` -- ASPP on the deepest feature map, fused with a stride-4 low-level
  feature (DeepLabV3+). Atrous rates are smaller than the paper's (3, 6, 9 instead of
  6, 12, 18) because training crops are small (a 224 px crop is 7x7 at stride 32, where a
  rate of 18 only reads padding). No image-pooling branch: a global average over a 224 px
  training crop means something else than over a 2000 px inference window; without it the
  head is fully convolutional. (Encoders with squeeze-excitation, and any encoder whose
  receptive field is much larger than the training crop, still see more context at
  inference than in training: predict in windows of about the training size.)
* ``unet`` -- upsampling blocks with skip connections from every encoder stage.
* ``segformer`` -- SegFormer's all-MLP decoder: every stage of stride >= 4 linearly
  projected, upsampled to stride 4, concatenated and fused by linear layers.

Output: logits ``(B, C + 1, H, W)`` at input resolution, the ``C`` foreground classes then
background (label values 0..C, as in the masks).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn import functional as F

from .. import WsssError
from .backbone import _create_timm, load_backbone_weights
from .families import SEG_ARCHS, family

if TYPE_CHECKING:
    from .config import ModelConfig

#: Channels of the ASPP / DeepLabV3+ decoder (kept small: CPU training must stay feasible).
ASPP_CHANNELS = 128
LOW_LEVEL_CHANNELS = 48
ASPP_RATES = (3, 6, 9)
#: Width of the SegFormer-style all-MLP decoder.
SEGFORMER_CHANNELS = 128


def _cbr(cin: int, cout: int, k: int = 3, dilation: int = 1) -> nn.Sequential:
    pad = dilation * (k // 2)
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=pad, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class _ASPP(nn.Module):
    def __init__(self, cin: int, cout: int, rates: tuple[int, ...]) -> None:
        super().__init__()
        self.branches = nn.ModuleList([_cbr(cin, cout, 1)] + [_cbr(cin, cout, 3, r) for r in rates])
        self.project = _cbr(cout * (len(rates) + 1), cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([b(x) for b in self.branches], dim=1))


class _DeepLabV3PlusHead(nn.Module):
    def __init__(self, channels: list[int], reductions: list[int], n_out: int) -> None:
        super().__init__()
        # low-level feature: the stage closest to stride 4
        self.low_index = min(range(len(reductions)), key=lambda i: abs(reductions[i] - 4))
        self.aspp = _ASPP(channels[-1], ASPP_CHANNELS, ASPP_RATES)
        self.low = _cbr(channels[self.low_index], LOW_LEVEL_CHANNELS, 1)
        self.fuse = nn.Sequential(
            _cbr(ASPP_CHANNELS + LOW_LEVEL_CHANNELS, ASPP_CHANNELS),
            _cbr(ASPP_CHANNELS, ASPP_CHANNELS),
        )
        self.classifier = nn.Conv2d(ASPP_CHANNELS, n_out, 1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        low = self.low(feats[self.low_index])
        high = F.interpolate(self.aspp(feats[-1]), size=low.shape[-2:], mode="bilinear",
                             align_corners=False)
        return self.classifier(self.fuse(torch.cat([high, low], dim=1)))


class _UNetHead(nn.Module):
    def __init__(self, channels: list[int], reductions: list[int], n_out: int) -> None:
        super().__init__()
        del reductions  # same constructor as the other heads (models.families)
        self.blocks = nn.ModuleList()
        cin = channels[-1]
        for skip in reversed(channels[:-1]):
            cout = max(16, skip)
            self.blocks.append(nn.Sequential(_cbr(cin + skip, cout), _cbr(cout, cout)))
            cin = cout
        self.classifier = nn.Conv2d(cin, n_out, 1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x = feats[-1]
        for block, skip in zip(self.blocks, reversed(feats[:-1]), strict=True):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return self.classifier(x)


class _SegFormerHead(nn.Module):
    """SegFormer's all-MLP decoder (Xie et al. 2021): each stage of stride >= 4 is projected
    by a per-pixel linear layer to ``SEGFORMER_CHANNELS``, upsampled to the stride-4 map,
    concatenated, fused by a linear layer (+ BN, ReLU) and classified by another."""

    def __init__(self, channels: list[int], reductions: list[int], n_out: int) -> None:
        super().__init__()
        self.used = [i for i, r in enumerate(reductions) if r >= 4] or list(range(len(channels)))
        e = SEGFORMER_CHANNELS
        self.proj = nn.ModuleList([nn.Conv2d(channels[i], e, 1) for i in self.used])
        self.fuse = _cbr(e * len(self.used), e, 1)
        self.drop = nn.Dropout2d(0.1)
        self.classifier = nn.Conv2d(e, n_out, 1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        size = feats[self.used[0]].shape[-2:]
        maps = []
        for proj, i in zip(self.proj, self.used, strict=True):
            m = proj(feats[i])
            if m.shape[-2:] != size:
                m = F.interpolate(m, size=size, mode="bilinear", align_corners=False)
            maps.append(m)
        return self.classifier(self.drop(self.fuse(torch.cat(maps, dim=1))))


class SegNet(nn.Module):
    """timm encoder + a decoder of :data:`~.families.SEG_ARCHS`; ``forward(x)`` gives
    ``(B, C+1, H, W)`` logits.

    Args:
        config: a ``kind='seg'`` :class:`ModelConfig` (``arch`` picks the decoder,
            ``backbone`` the timm encoder).
        pretrained: load the hub's ImageNet weights into the encoder (needs internet).
        weights: a local file of plain timm weights to initialise the encoder.
    """

    def __init__(self, config: ModelConfig, pretrained: bool = False,
                 weights: str | None = None) -> None:
        super().__init__()
        if config.kind != "seg":
            raise WsssError(f"SegNet needs a kind='seg' model config, not {config.kind!r}")
        self.config = config
        mean = torch.tensor(config.mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
        std = torch.tensor(config.std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
        self.register_buffer("pixel_mean", mean, persistent=False)
        self.register_buffer("pixel_std", std, persistent=False)
        self.encoder = _create_timm(config.backbone, pretrained, features_only=True)
        info = self.encoder.feature_info
        chans, reds = list(info.channels()), list(info.reduction())
        if len(chans) < 2:
            raise WsssError(f"encoder {config.backbone!r} has too few stages for a decoder")
        n_out = config.num_classes + 1
        fam = family("seg", config.arch)
        if fam is None:
            raise WsssError(f"unknown segmentation decoder {config.arch!r} "
                            f"(use {', '.join(SEG_ARCHS)})")
        self.decoder: nn.Module = globals()[fam.head](chans, reds, n_out)
        self.load_report: dict[str, Any] | None = None
        if weights:
            self.load_report = load_backbone_weights(self.encoder, weights)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (or 0-255 float) ``(B, 3, H, W)`` -> normalised float32 input."""
        return (x.float() - self.pixel_mean) / self.pixel_std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, C+1, H, W)`` of normalised input ``x`` (background last)."""
        feats = self.encoder(x)
        out = self.decoder(feats)
        return F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)
