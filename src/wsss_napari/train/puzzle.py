"""Puzzle-CAM (Jo & Yu, ICIP 2021): CAMs of an image's tiles must agree with the whole's.

The batch is also split into a 2x2 grid of tiles that go through the same network; their
class maps are merged back into one map per image. The loss adds, to the usual
classification loss of the whole image, the classification loss of the merged map
(global average) and ``alpha * L1(whole maps, merged maps)`` over the classes present in the
image's label. A tile sees only a quarter of the context, so the consistency term pulls the
whole image's CAM towards evidence that is local, i.e. it spreads the CAM over more of the
object instead of its most discriminative part. ``alpha`` ramps up linearly over the first
half of training (``alpha_t = alpha * min(1, t / (T / 2))``), as in the reference code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

#: Tiles per side (the reference code's ``num_pieces = 4``).
PIECES = 2


def tile(x: torch.Tensor, n: int = PIECES) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(n * n * B, C, H / n, W / n)``: tile ``(i, j)`` of every image,
    stacked tile-major (all images' top-left tiles first)."""
    b, c, h, w = x.shape
    th, tw = h // n, w // n
    return (x.reshape(b, c, n, th, n, tw).permute(2, 4, 0, 1, 3, 5)
            .reshape(n * n * b, c, th, tw))


def merge(t: torch.Tensor, n: int = PIECES) -> torch.Tensor:
    """The inverse of :func:`tile`: ``(n * n * B, C, h, w)`` -> ``(B, C, n * h, n * w)``."""
    nb, c, th, tw = t.shape
    b = nb // (n * n)
    return (t.reshape(n, n, b, c, th, tw).permute(2, 3, 0, 4, 1, 5)
            .reshape(b, c, n * th, n * tw))


def puzzle_weight(alpha: float, step: int, total_steps: int) -> float:
    """The consistency weight at ``step``: linear warm-up to ``alpha`` over half the steps."""
    half = max(total_steps / 2.0, 1.0)
    return float(alpha) * min(1.0, step / half)


def puzzle_loss(model, x: torch.Tensor, y: torch.Tensor, cls_loss, alpha: float
                ) -> tuple[torch.Tensor, dict[str, float]]:
    """The Puzzle-CAM loss of a normalised batch ``x`` with multi-labels ``y``.

    Args:
        model: a CAM model (``class_maps``).
        x: normalised input ``(B, 3, H, W)``; ``H`` and ``W`` must be multiples of
            ``2 * model.stride`` so that the tiles' maps join exactly.
        y: float labels ``(B, C)``.
        cls_loss: the classification loss ``(logits, y) -> scalar``.
        alpha: the weight of the L1 consistency term at this step.

    Returns:
        The total loss and its parts (``cls``, ``cls_merged``, ``l1``).
    """
    import torch

    maps = model.class_maps(x)
    merged = merge(model.class_maps(tile(x)))
    if merged.shape[-2:] != maps.shape[-2:]:  # odd feature sizes: compare on the whole grid
        merged = torch.nn.functional.interpolate(merged, size=maps.shape[-2:],
                                                 mode="bilinear", align_corners=False)
    full_loss = cls_loss(maps.float().mean(dim=(2, 3)), y)
    merged_loss = cls_loss(merged.float().mean(dim=(2, 3)), y)
    mask = y[:, :, None, None]
    l1 = ((maps.float() - merged.float()).abs() * mask).mean()
    total = full_loss + merged_loss + alpha * l1
    return total, {"cls": float(full_loss.detach()), "cls_merged": float(merged_loss.detach()),
                   "l1": float(l1.detach())}
