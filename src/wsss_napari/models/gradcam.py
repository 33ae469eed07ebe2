"""GradCamNet: CAMs for backbones whose features are tokens (ViT, hybrid CNN-Transformer).

A transformer has no spatial classifier to read CAMs from, so the model is an ordinary timm
classifier with ``C`` sigmoid outputs and its maps come from Grad-CAM: the gradient of each
class logit with respect to the last block's patch tokens, averaged over the tokens, weights
the token features; the weighted sum is reshaped to the patch grid. It offers the same
interface as :class:`~wsss_napari.models.cam.CamNet` (``forward``, ``class_maps``, ``cams``),
so multi-scale and whole-slide inference work unchanged; it simply costs a backward pass per
class and ignores ``torch.inference_mode`` (gradients are switched back on locally).

Works for any timm classifier whose ``forward_features`` returns tokens ``(B, N, D)`` or a
map ``(B, D, h, w)`` / ``(B, h, w, D)``.
"""

from __future__ import annotations

import math
import threading
from typing import TYPE_CHECKING, Any

import torch
from torch.nn import functional as F

from .. import WsssError
from .backbone import _create_timm, load_backbone_weights
from .cam import CamModel

if TYPE_CHECKING:
    from .config import ModelConfig


class GradCamNet(CamModel):
    """timm classifier (``C`` outputs) whose class maps are computed by Grad-CAM.

    Args:
        config: a ``kind='cam', arch='gradcam'`` :class:`ModelConfig`.
        pretrained: load the hub's weights (needs internet).
        weights: local plain timm weights for the backbone (head is re-initialised).
    """

    needs_grad = True

    def __init__(self, config: ModelConfig, pretrained: bool = False,
                 weights: str | None = None) -> None:
        super().__init__()
        self._init_norm(config)
        kw: dict[str, Any] = {"num_classes": config.num_classes}
        try:  # ViTs accept any input size only when asked to
            self.model = _create_timm(config.backbone, pretrained, img_size=config.input_size,
                                      dynamic_img_size=True, **kw)
        except (WsssError, TypeError) as err:
            if pretrained and "download" in str(err):
                raise
            self.model = _create_timm(config.backbone, pretrained, **kw)
        info = getattr(self.model, "feature_info", None) or [{"reduction": 16}]
        self.stride = int(info[-1].get("reduction", 16))
        self.num_prefix_tokens = int(getattr(self.model, "num_prefix_tokens", 0))
        self.load_report: dict[str, Any] | None = None
        if weights:
            self.load_report = load_backbone_weights(self.model, weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Image-level logits ``(B, C)`` from the timm head."""
        return self.model(x)

    def _token_grid(self, feats: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """Features -> ``(B, D, h, w)`` spatial map."""
        if feats.ndim == 4:
            if str(getattr(self.model, "output_fmt", "NCHW")) in ("NHWC", "Format.NHWC"):
                feats = feats.permute(0, 3, 1, 2)  # swin-like
            return feats
        tokens = feats[:, self.num_prefix_tokens:]
        n = tokens.shape[1]
        h, w = math.ceil(hw[0] / self.stride), math.ceil(hw[1] / self.stride)
        if h * w != n:
            h, w = hw[0] // self.stride, hw[1] // self.stride
        if h * w != n:
            s = int(round(math.sqrt(n)))
            if s * s != n:
                raise WsssError(f"cannot reshape {n} tokens of {self.config.backbone!r} "
                                f"into a grid for input {hw}")
            h = w = s
        return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, h, w)

    def _target_layer(self) -> Any:
        """Where Grad-CAM reads tokens: the input norm of the last transformer block (the
        final tokens of a class-token ViT carry no gradient: only the class token reaches the
        head), else the model's final features."""
        blocks = getattr(self.model, "blocks", None)
        if blocks is not None and len(blocks) and hasattr(blocks[-1], "norm1"):
            return blocks[-1].norm1
        return None

    def logits_and_cams(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and Grad-CAMs ``(B, C, h, w)`` (ReLU applied), with gradients enabled locally."""
        captured: list[torch.Tensor] = []
        layer = self._target_layer()
        with torch.inference_mode(False), torch.enable_grad():
            x = x.clone()  # an inference-mode tensor cannot enter autograd
            if layer is not None:
                # CPU streams run the same model in several threads at once; each call keeps
                # only the features its own thread produced (else it can read another
                # batch's tensor and the gradient has no path to it)
                me = threading.get_ident()
                handle = layer.register_forward_hook(
                    lambda m, i, o: captured.append(o) if threading.get_ident() == me else None)
                try:
                    logits = self.model(x)
                finally:
                    handle.remove()
                feats = captured[-1]
            else:
                feats = self.model.forward_features(x)
                if not feats.requires_grad:  # frozen params: make the map the leaf
                    feats = feats.detach().requires_grad_(True)
                logits = self.model.forward_head(feats)
            if not feats.requires_grad:
                raise WsssError(f"Grad-CAM needs gradients through {self.config.backbone!r}")
            fmap = self._token_grid(feats, tuple(x.shape[-2:]))
            maps = []
            for c in range(logits.shape[1]):
                (grad,) = torch.autograd.grad(logits[:, c].sum(), feats,
                                              retain_graph=c < logits.shape[1] - 1)
                gmap = self._token_grid(grad, tuple(x.shape[-2:]))
                weights = gmap.mean(dim=(2, 3), keepdim=True)
                maps.append((weights * fmap).sum(dim=1))
            cams = torch.stack(maps, dim=1)
        return logits.detach().float(), F.relu(cams.detach())

    def class_maps(self, x: torch.Tensor) -> torch.Tensor:
        """Grad-CAM maps before ReLU are not meaningful; returns the ReLU'd maps."""
        return self.logits_and_cams(x)[1]

    def cams(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits_and_cams(x)[1]
