"""Area loss: the pixel labels that patch labels imply, used where they are exact.

A patch label says which classes a patch contains, not where they are. Two parts of it are
nevertheless exact at every pixel: a class the patch is *not* labelled with is absent from
all of it, and a *single-label* patch is its class wherever there is tissue. A classifier
pooled by global averaging only answers for the mean of its class maps, so it may explain a
single-label patch with a few hot spots (and the CAM then covers little of the tissue) or
let an absent class glow where a present one cancels it in the mean. The area loss asks each
position of the class maps, before pooling, to agree with what the label implies (binary
cross-entropy per position): the present class of a single-label patch on its tissue, every
absent class everywhere. Positions of present classes in multi-label patches say nothing
(their extent is what the CAMs must find) and neither does the glass of a single-label patch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..params import PostprocParams

if TYPE_CHECKING:
    import torch

#: Grey level above which a pixel is glass (the post-processing's default ``white_threshold``).
GLASS_GREY = float(PostprocParams().white_threshold)
#: A class-map position is tissue when at least this fraction of its pixels is not glass.
TISSUE_FRACTION = 0.5


def tissue_positions(raw: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(B, 1, h, w)`` bool: class-map positions of ``raw`` (0-255 RGB ``(B, 3, H, W)``)
    that are mostly tissue, at the maps' resolution ``size``."""
    from torch.nn import functional as F

    r, g, b = raw.float().unbind(dim=1)
    grey = 0.299 * r + 0.587 * g + 0.114 * b
    tissue = (grey <= GLASS_GREY).float().unsqueeze(1)
    return F.adaptive_avg_pool2d(tissue, size) >= TISSUE_FRACTION


def implied_targets(y: torch.Tensor, tissue: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position targets and weights ``(B, C, h, w)`` that the labels ``y`` (B, C) imply:
    target 0 with weight 1 for absent classes; target 1 with weight 1 on the tissue of a
    single-label patch's class; weight 0 elsewhere (present classes of multi-label patches)."""
    b, c = y.shape
    present = y > 0.5
    single = present.sum(dim=1) == 1
    shape = (b, c) + tuple(tissue.shape[-2:])
    target = present[:, :, None, None].expand(shape).float()
    weight = (~present)[:, :, None, None].expand(shape).float()
    positive = (present & single[:, None])[:, :, None, None] & tissue
    return target, weight + positive.float()


def area_loss(maps: torch.Tensor, raw: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean per-position BCE of the class maps ``maps`` (B, C, h, w; logits before pooling)
    against the targets the labels ``y`` imply (:func:`implied_targets`), over the positions
    that carry one; ``raw`` are the input's 0-255 pixels (for glass)."""
    from torch.nn import functional as F

    target, weight = implied_targets(y, tissue_positions(raw, tuple(maps.shape[-2:])))
    per = F.binary_cross_entropy_with_logits(maps.float(), target, reduction="none")
    return (per * weight).sum() / weight.sum().clamp_min(1.0)
