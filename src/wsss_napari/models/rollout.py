"""Attention maps of transformer classifiers: attention rollout and gradient-weighted rollout.

* **Rollout** (Abnar & Zuidema 2020): per layer the heads' attention is fused (``mean``,
  ``max`` or ``min``), optionally the weakest ``discard_ratio`` of its entries are zeroed
  (the class token's attention to itself is kept), the residual path is added
  (``(A + I) / 2``) and rows are renormalised to sum to 1; the layers are chained by
  matrix products from ``start_layer`` on. The class token's row is the map (models without
  a class token: the mean of all rows). Class-agnostic.
* **Gradient-weighted rollout** (Chefer et al. 2021, "Generic attention-model
  explainability"): each layer's attention is weighted by the gradient of one class logit
  with respect to it, negative parts dropped, heads averaged, and accumulated as
  ``R <- R + A_bar @ R`` from ``R = I``. One map per class.

Attention weights are read by a forward hook on each timm ``Attention``'s ``attn_drop``
module, so fused attention (``F.scaled_dot_product_attention``, which never materialises
the weights) is switched off while capturing, and capturing asserts that every attention
module produced its weights (:class:`AttentionCapture`). Works on any timm ViT-like model and
on the hybrids of :mod:`wsss_napari.models.hybrid`; maps are at the token grid, ``stride`` px
of input per token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .. import WsssError

HEAD_FUSIONS = ("mean", "max", "min")
METHODS = ("rollout", "grad-rollout")


def _fuse_heads(attn: torch.Tensor, head_fusion: str) -> torch.Tensor:
    if head_fusion == "mean":
        return attn.mean(dim=1)
    if head_fusion == "max":
        return attn.amax(dim=1)
    if head_fusion == "min":
        return attn.amin(dim=1)
    raise WsssError(f"head_fusion must be one of {HEAD_FUSIONS}, not {head_fusion!r}")


def rollout(attentions: list[torch.Tensor], head_fusion: str = "mean",
            discard_ratio: float = 0.0, start_layer: int = 0) -> torch.Tensor:
    """Attention rollout ``(B, N, N)`` of per-layer attentions ``(B, heads, N, N)``.

    Args:
        attentions: softmaxed attention of each layer, in forward order.
        head_fusion: ``mean``, ``max`` or ``min`` over heads.
        discard_ratio: fraction of each fused matrix's smallest entries set to 0 (the
            ``[0, 0]`` entry, class token to itself, is kept), before the residual.
        start_layer: first layer of the product (earlier layers are skipped).
    """
    if not attentions:
        raise WsssError("rollout needs at least one layer of attention weights")
    if not 0.0 <= discard_ratio < 1.0:
        raise WsssError(f"discard_ratio must be in [0, 1), not {discard_ratio}")
    if not 0 <= start_layer < len(attentions):
        raise WsssError(f"start_layer must be in [0, {len(attentions) - 1}], not {start_layer}")
    b, _, n, _ = attentions[0].shape
    eye = torch.eye(n, dtype=torch.float64, device=attentions[0].device).expand(b, n, n)
    joint = eye
    for attn in attentions[start_layer:]:
        a = _fuse_heads(attn.detach().double(), head_fusion)
        if discard_ratio > 0:
            flat = a.reshape(b, -1).clone()
            k = int(flat.shape[-1] * discard_ratio)
            if k:
                low = flat.topk(k, dim=-1, largest=False).indices
                keep0 = flat[:, 0].clone()
                flat.scatter_(1, low, 0.0)
                flat[:, 0] = keep0
            a = flat.reshape(b, n, n)
        a = (a + eye) / 2.0
        a = a / a.sum(dim=-1, keepdim=True)
        joint = torch.bmm(a, joint)
    return joint


def grad_rollout(attentions: list[torch.Tensor], grads: list[torch.Tensor],
                 start_layer: int = 0) -> torch.Tensor:
    """Gradient-weighted rollout ``(B, N, N)``: ``R <- R + mean_h((dy/dA * A)^+) @ R``."""
    if len(attentions) != len(grads) or not attentions:
        raise WsssError(f"gradient-weighted rollout needs one gradient per attention layer "
                        f"({len(grads)} gradients for {len(attentions)} layers)")
    b, _, n, _ = attentions[0].shape
    joint = torch.eye(n, dtype=torch.float64, device=attentions[0].device).repeat(b, 1, 1)
    for attn, grad in list(zip(attentions, grads, strict=True))[start_layer:]:
        cam = (grad.detach().double() * attn.detach().double()).clamp(min=0).mean(dim=1)
        joint = joint + torch.bmm(cam, joint)
    return joint


def token_map(joint: torch.Tensor, num_prefix_tokens: int, grid: tuple[int, int],
              normalize: bool = True) -> torch.Tensor:
    """The patch map ``(B, h, w)`` of a rollout: the class token's row (or the mean row of a
    model without prefix tokens) over the patch tokens, divided by its maximum."""
    rows = joint[:, 0] if num_prefix_tokens > 0 else joint.mean(dim=1)
    patch = rows[:, num_prefix_tokens:]
    h, w = grid
    if patch.shape[1] != h * w:
        raise WsssError(f"{patch.shape[1]} patch tokens do not fill a {h}x{w} grid")
    m = patch.reshape(-1, h, w).float()
    if normalize:
        m = m / m.amax(dim=(1, 2), keepdim=True).clamp(min=1e-12)
    return m


def _attention_modules(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules()
            if hasattr(m, "fused_attn") and isinstance(getattr(m, "attn_drop", None), nn.Module)]


class AttentionCapture:
    """Context manager: fused attention off, every attention module's weights captured.

    ``attentions`` holds ``(B, heads, N, N)`` per layer in forward order; with
    ``with_grads`` the gradients reaching them in a later backward go to ``grads`` (forward
    order). :meth:`check` raises when some module produced no weights.
    """

    def __init__(self, model: nn.Module, with_grads: bool = False) -> None:
        self.modules = _attention_modules(model)
        if not self.modules:
            raise WsssError(f"{type(model).__name__} has no timm attention modules to explain")
        self.with_grads = with_grads
        self.attentions: list[torch.Tensor] = []
        self._grads: dict[int, torch.Tensor] = {}
        self._handles: list = []
        self._fused: list[bool] = []

    def _hook(self, _module, _inp, out: torch.Tensor) -> None:
        index = len(self.attentions)
        self.attentions.append(out)
        if self.with_grads and out.requires_grad:
            out.register_hook(lambda g, i=index: self._grads.__setitem__(i, g))

    def __enter__(self) -> AttentionCapture:
        for m in self.modules:
            self._fused.append(bool(m.fused_attn))
            m.fused_attn = False
            self._handles.append(m.attn_drop.register_forward_hook(self._hook))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        for m, fused in zip(self.modules, self._fused, strict=True):
            m.fused_attn = fused

    def reset(self) -> None:
        self.attentions.clear()
        self._grads.clear()

    def check(self) -> None:
        """Raise unless every attention module's weights were captured once."""
        if len(self.attentions) != len(self.modules):
            raise WsssError(f"captured {len(self.attentions)} attention maps from "
                            f"{len(self.modules)} attention modules (fused attention still on, "
                            "or a custom attention class?)")

    @property
    def grads(self) -> list[torch.Tensor]:
        if len(self._grads) != len(self.attentions):
            raise WsssError("attention gradients were not captured (no backward pass?)")
        return [self._grads[i] for i in range(len(self.attentions))]


def _grid(n_patch: int, hw: tuple[int, int], stride: int) -> tuple[int, int]:
    for h, w in ((math.ceil(hw[0] / stride), math.ceil(hw[1] / stride)),
                 (hw[0] // stride, hw[1] // stride)):
        if h * w == n_patch:
            return h, w
    s = int(round(math.sqrt(n_patch)))
    if s * s != n_patch:
        raise WsssError(f"cannot lay {n_patch} tokens on a grid for input {hw}")
    return s, s


@dataclass
class AttentionMaps:
    """Maps ``(K, h, w)`` in [0, 1] at the token grid and what they are."""

    maps: np.ndarray
    names: tuple[str, ...]
    method: str
    stride: int


def attention_maps(model: nn.Module, x: torch.Tensor, method: str = "rollout",
                   head_fusion: str = "mean", discard_ratio: float = 0.0,
                   start_layer: int = 0) -> AttentionMaps:
    """Rollout (one class-agnostic map) or gradient-weighted rollout (one map per class) of
    one normalised image ``x`` ``(1, 3, H, W)``.

    Args:
        model: a CAM model wrapping a timm transformer (``GradCamNet``: ``.model``) or a timm
            transformer / hybrid itself.
        x: the normalised input (``model.normalize`` of uint8 pixels).
        method: ``rollout`` or ``grad-rollout``.
        head_fusion, discard_ratio, start_layer: see :func:`rollout` (the gradient-weighted
            rule averages heads and uses ``start_layer`` only).
    """
    if method not in METHODS:
        raise WsssError(f"method must be one of {METHODS}, not {method!r}")
    net = getattr(model, "model", model)
    names = tuple(getattr(getattr(model, "config", None), "class_names", ()) or ())
    info = getattr(net, "feature_info", None) or [{"reduction": 16}]
    last = info[-1] if isinstance(info, list) else {"reduction": info.reduction()[-1]}
    stride = int(last.get("reduction", 16))
    prefix = int(getattr(net, "num_prefix_tokens", 1))
    was_training = net.training
    net.eval()
    try:
        with torch.inference_mode(False), torch.enable_grad():
            x = x.clone()
            with AttentionCapture(net, with_grads=method == "grad-rollout") as cap:
                if method == "rollout":
                    with torch.no_grad():
                        net(x)
                    cap.check()
                    joint = [rollout(cap.attentions, head_fusion, discard_ratio, start_layer)]
                    names = ("rollout",)
                else:
                    logits = net(x)
                    cap.check()
                    attns = list(cap.attentions)
                    joint = []
                    for c in range(logits.shape[1]):
                        cap._grads.clear()
                        logits[:, c].sum().backward(retain_graph=c < logits.shape[1] - 1)
                        joint.append(grad_rollout(attns, cap.grads, start_layer))
                    names = names if len(names) == logits.shape[1] else tuple(
                        f"class{c}" for c in range(logits.shape[1]))
                    net.zero_grad(set_to_none=True)
    finally:
        net.train(was_training)
    n_patch = joint[0].shape[-1] - prefix
    grid = _grid(n_patch, tuple(x.shape[-2:]), stride)
    maps = torch.cat([token_map(j, prefix, grid) for j in joint], dim=0)
    return AttentionMaps(maps.cpu().numpy().astype(np.float32), names, method, stride)


def explain_image(model: nn.Module, rgb: np.ndarray, method: str = "rollout",
                  head_fusion: str = "mean", discard_ratio: float = 0.0, start_layer: int = 0,
                  upsample: bool = True) -> AttentionMaps:
    """Attention maps of an RGB uint8 image ``(H, W, 3)`` (upsampled to ``(H, W)`` by the
    token stride unless ``upsample`` is False).

    Raises:
        WsssError: not an RGB image, a model without attention, or weights not captured.
    """
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise WsssError(f"need an RGB image (H, W, 3), not shape {rgb.shape}")
    device = next(model.parameters()).device
    x = torch.from_numpy(np.ascontiguousarray(rgb[..., :3].transpose(2, 0, 1)))[None]
    x = x.to(device)
    x = model.normalize(x) if hasattr(model, "normalize") else x.float() / 255.0
    out = attention_maps(model, x, method, head_fusion, discard_ratio, start_layer)
    if upsample:
        t = torch.from_numpy(out.maps)[None]
        gh, gw = t.shape[-2:]
        up = F.interpolate(t, size=(gh * out.stride, gw * out.stride), mode="bilinear",
                           align_corners=False)
        h, w = rgb.shape[:2]
        if up.shape[-2] < h or up.shape[-1] < w:  # floor grids: edge pixels copy the border
            up = F.pad(up, (0, max(w - up.shape[-1], 0), 0, max(h - up.shape[-2], 0)),
                       mode="replicate")
        out.maps = up[0, :, :h, :w].numpy()
        out.stride = 1
    return out


#: Largest region (level-0 px) explained in one pass: attention is quadratic in tokens.
MAX_EXPLAIN_PIXELS = 2048 * 2048


def explain_region(slide, model: nn.Module, region=None, method: str = "rollout",
                   head_fusion: str = "mean", discard_ratio: float = 0.0,
                   start_layer: int = 0) -> tuple[AttentionMaps, object]:
    """Attention maps of a level-0 ``region`` (:class:`~wsss_napari.region.Region`, or the
    whole slide when None) of a :class:`~wsss_napari.io.slide.Slide`, at level-0 resolution.

    Returns:
        ``(maps, region)``: ``maps.maps`` is ``(K, H, W)`` over the (clipped) region.

    Raises:
        WsssError: a region over :data:`MAX_EXPLAIN_PIXELS` (attention grows with the square
            of the token count), outside the slide, or a model without attention.
    """
    from ..region import Region

    h0, w0 = slide.shape
    region = (Region.whole(h0, w0) if region is None else region).clip(h0, w0)
    y, x = int(region.y), int(region.x)
    h, w = int(round(region.height)), int(round(region.width))
    if h * w > MAX_EXPLAIN_PIXELS:
        raise WsssError(f"region {region.describe()} is too large for attention maps "
                        f"(at most {MAX_EXPLAIN_PIXELS} px): choose a smaller --region")
    rgb = np.asarray(slide.read_region(0, y, x, h, w))
    maps = explain_image(model, rgb, method, head_fusion, discard_ratio, start_layer)
    return maps, Region(y=y, x=x, height=h, width=w)
