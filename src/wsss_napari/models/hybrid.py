"""Hybrid CNN-Transformer classifiers, registered as timm models (``--backbone wsss_hybrid_*``).

As in the pancreatic-cytology classifier: a CNN stem reads local texture, a small transformer
encoder on top relates distant parts of the patch. The stem is a timm ``features_only`` CNN
cut at stride 16; a 1x1 convolution projects its map to ``embed_dim`` tokens (one per stride-16
cell), a class token and a learned position embedding (resized to any input size) are added,
then ``depth`` timm ViT blocks and a linear head read the class token.

The models are plain timm models (registered with ``timm.models.register_model`` when this
module is imported; :mod:`wsss_napari.models.registry` does that), so every timm-based path
works: ``train-cls --backbone wsss_hybrid_resnet18`` builds a :class:`GradCamNet` (Grad-CAM
on the last block's tokens, stride 16), checkpoints rebuild them by name, and
:mod:`wsss_napari.models.rollout` reads their attention (timm ``Attention`` blocks).

Registered:

* ``wsss_hybrid_resnet18``: resnet18 stem, 4 blocks of width 192, 3 heads;
* ``wsss_hybrid_mobilenetv3``: mobilenetv3_small_100 stem (the default backbone's), 4 blocks
  of width 128, 4 heads -- trainable on a CPU;
* ``wsss_hybrid_test``: timm's ``test_resnet`` stem, 2 blocks of width 32 (tests).

``pretrained=True`` loads the hub's ImageNet weights into the CNN stem only (the transformer
starts from scratch).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

#: Output stride of the token grid.
TOKEN_STRIDE = 16


class HybridCnnViT(nn.Module):
    """CNN stem (stride 16) -> 1x1 projection -> [CLS] + tokens -> ViT blocks -> head."""

    def __init__(self, stem: str, embed_dim: int, depth: int, num_heads: int,
                 num_classes: int = 1000, pretrained: bool = False, img_size: int = 224,
                 drop_rate: float = 0.0, **_: Any) -> None:
        super().__init__()
        import timm
        from timm.models.vision_transformer import Block

        probe = timm.create_model(stem, features_only=True, pretrained=False)
        reds = list(probe.feature_info.reduction())
        if TOKEN_STRIDE not in reds:
            raise ValueError(f"stem {stem!r} has no stride-{TOKEN_STRIDE} stage ({reds})")
        index = reds.index(TOKEN_STRIDE)
        del probe
        self.stem = timm.create_model(stem, features_only=True, pretrained=pretrained,
                                      out_indices=(index,))
        chans = self.stem.feature_info.channels()[-1]
        self.proj = nn.Conv2d(chans, embed_dim, 1)
        grid = max(img_size // TOKEN_STRIDE, 1)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.cls_pos = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.randn(1, embed_dim, grid, grid) * 0.02)
        self.blocks = nn.Sequential(*[Block(embed_dim, num_heads, mlp_ratio=4.0, qkv_bias=True)
                                      for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes else nn.Identity()
        self.num_classes = num_classes
        self.num_features = self.embed_dim = embed_dim
        self.num_prefix_tokens = 1
        self.feature_info = [{"num_chs": embed_dim, "reduction": TOKEN_STRIDE,
                              "module": "blocks"}]
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens ``(B, 1 + h*w, D)`` after the final norm (class token first)."""
        fmap = self.proj(self.stem(x)[-1])
        b, _, h, w = fmap.shape
        pos = self.pos_embed
        if pos.shape[-2:] != (h, w):
            pos = F.interpolate(pos, size=(h, w), mode="bilinear", align_corners=False)
        tokens = (fmap + pos).flatten(2).transpose(1, 2)
        cls = (self.cls_token + self.cls_pos).expand(b, -1, -1)
        return self.norm(self.blocks(torch.cat([cls, tokens], dim=1)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(x[:, 0])
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int, *_: Any, **__: Any) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes else nn.Identity()


def _register() -> None:
    from timm.models import register_model

    specs = {
        "wsss_hybrid_resnet18": dict(stem="resnet18", embed_dim=192, depth=4, num_heads=3),
        "wsss_hybrid_mobilenetv3": dict(stem="mobilenetv3_small_100", embed_dim=128, depth=4,
                                        num_heads=4),
        "wsss_hybrid_test": dict(stem="test_resnet", embed_dim=32, depth=2, num_heads=2),
    }
    import timm

    for name, spec in specs.items():
        if timm.is_model(name):
            continue

        def entry(pretrained: bool = False, _spec=spec, **kwargs: Any) -> HybridCnnViT:
            for k in ("pretrained_cfg", "pretrained_cfg_overlay", "dynamic_img_size",
                      "cache_dir"):
                kwargs.pop(k, None)
            return HybridCnnViT(pretrained=pretrained, **_spec, **kwargs)

        entry.__name__ = name
        entry.__qualname__ = name
        entry.__module__ = __name__
        register_model(entry)


_register()
