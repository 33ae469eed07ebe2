"""Activation dropout (ADL; Choe & Shim, CVPR 2019) on the fused features of a CAM model.

A classifier pooled by global averaging learns from the most discriminative part of each
tissue, and its CAM covers little else (a tumour's CAM lights up a few gland lumina, not the
whole gland). During training, with probability ``rate`` per patch, the positions of the
fused feature map whose channel-mean activation is at least ``GAMMA`` times the patch's
maximum are zeroed before the 1x1 classifier: the patch must then be classified from its
other positions, so the class evidence (and the CAM) spreads over more of the tissue.
Inference is untouched: the drop exists only in the training loss. The top-ranked WSSS4LUAD
solution used a progressive variant of the same idea (dropout attention).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

#: Positions at or above this fraction of a patch's maximum channel-mean activation drop.
GAMMA = 0.9


def drop_mask(feats: torch.Tensor, rate: float, generator: torch.Generator | None = None,
              gamma: float = GAMMA) -> torch.Tensor:
    """``(B, 1, h, w)`` multiplier: 0 at the most activated positions of the patches drawn
    (each with probability ``rate``), 1 elsewhere and for the patches not drawn."""
    import torch

    att = feats.detach().float().mean(dim=1, keepdim=True)
    peak = att.amax(dim=(2, 3), keepdim=True)
    hot = att >= gamma * peak
    drawn = torch.rand(feats.shape[0], 1, 1, 1, device=feats.device,
                       generator=generator) < rate
    return (~(hot & drawn)).to(feats.dtype)
