"""Hybrid CNN-Transformer backbone and attention rollout: known toy patterns, capture checks,
training through train-cls, and the explain CLI on a real file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from wsss_napari import WsssError
from wsss_napari.models.rollout import (
    AttentionCapture,
    explain_image,
    grad_rollout,
    rollout,
    token_map,
)


def _toy_layer(cls_row, heads=1):
    """One layer of attention over [CLS] + 4 patches: patches attend to themselves only."""
    a = torch.eye(5, dtype=torch.float64)
    a[0] = torch.tensor(cls_row, dtype=torch.float64)
    return a.expand(1, heads, 5, 5).clone()


def test_rollout_of_a_known_pattern_gives_the_hand_computed_map():
    layer = _toy_layer([0.0, 0.7, 0.1, 0.1, 0.1])
    # one layer: (A + I) / 2 -> CLS row [.5, .35, .05, .05, .05]
    joint = rollout([layer])
    torch.testing.assert_close(joint[0, 0], torch.tensor([.5, .35, .05, .05, .05],
                                                         dtype=torch.float64))
    # two layers: CLS row [.25, .525, .075, .075, .075] (worked by hand)
    joint = rollout([layer, layer])
    torch.testing.assert_close(joint[0, 0], torch.tensor([.25, .525, .075, .075, .075],
                                                         dtype=torch.float64))
    m = token_map(joint, num_prefix_tokens=1, grid=(2, 2))
    torch.testing.assert_close(m[0], torch.tensor([[1.0, 1 / 7], [1 / 7, 1 / 7]]))
    # start_layer skips the first layer: same as one layer
    torch.testing.assert_close(rollout([layer, layer], start_layer=1), rollout([layer]))


def test_head_fusion_and_discard_ratio():
    a = torch.cat([_toy_layer([0.2, 0.8, 0, 0, 0]), _toy_layer([0.2, 0, 0, 0, 0.8])], dim=1)
    mean = token_map(rollout([a], "mean"), 1, (2, 2))[0]
    assert mean[0, 0] == mean[1, 1] == 1.0 and mean[0, 1] == 0.0
    mx = rollout([a], "max")[0, 0]  # fused row [.2, .8, 0, 0, .8]: renormalised after residual
    torch.testing.assert_close(mx, torch.tensor([1.2, .8, 0, 0, .8], dtype=torch.float64) / 2.8)
    # dropping the weakest 19 of 25 entries keeps the six strongest (four 1s on the patch
    # diagonal, .5 and .2) and CLS->CLS
    layer = _toy_layer([0.1, 0.5, 0.2, 0.15, 0.05])
    kept = rollout([layer], discard_ratio=0.76)[0, 0]
    assert kept[4] == 0 and kept[3] == 0 and kept[1] > kept[2] > 0
    with pytest.raises(WsssError, match="head_fusion"):
        rollout([a], "median")


def test_gradient_weighted_rollout_rule():
    a = _toy_layer([0.0, 0.5, 0.5, 0.0, 0.0])
    g = torch.zeros_like(a)
    g[0, 0, 0, 1], g[0, 0, 0, 2] = 2.0, -1.0  # class evidence on patch 1, against patch 2
    joint = grad_rollout([a], [g])
    # R = I + relu(g * a): CLS row [1, 1, 0, 0, 0]
    torch.testing.assert_close(joint[0, 0], torch.tensor([1.0, 1.0, 0, 0, 0],
                                                         dtype=torch.float64))


class _SilentAttention(nn.Module):
    """Looks like timm attention but never runs attn_drop (as fused SDPA does)."""

    def __init__(self) -> None:
        super().__init__()
        self.fused_attn = True
        self.attn_drop = nn.Dropout(0.0)

    def forward(self, x):
        return x


def test_capture_asserts_that_attention_weights_were_seen():
    model = nn.Sequential(_SilentAttention(), _SilentAttention())
    with AttentionCapture(model) as cap:
        assert all(not m.fused_attn for m in cap.modules)
        model(torch.zeros(1, 3, 4))
        with pytest.raises(WsssError, match="captured 0 attention maps from 2"):
            cap.check()
    assert all(m.fused_attn for m in model)  # restored
    with pytest.raises(WsssError, match="no timm attention"):
        AttentionCapture(nn.Linear(2, 2))


def test_hybrid_maps_from_the_real_model_and_fused_attention_restored():
    from wsss_napari.models.config import ModelConfig
    from wsss_napari.models.registry import build_model, default_arch

    assert default_arch("wsss_hybrid_test") == "gradcam"
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="gradcam", backbone="wsss_hybrid_test",
                                    input_size=48)).eval()
    rgb = np.random.default_rng(1).integers(0, 255, (40, 72, 3), dtype=np.uint8)
    flat = explain_image(model, rgb, "rollout")
    assert flat.maps.shape == (1, 40, 72) and flat.names == ("rollout",)
    assert flat.maps.max() == pytest.approx(1.0, abs=0.05) and flat.maps.min() >= 0
    per_class = explain_image(model, rgb, "grad-rollout", upsample=False)
    assert per_class.maps.shape == (3, 3, 5) and per_class.stride == 16  # ceil(40/16), ceil(72/16)
    assert per_class.names == ("tumor", "stroma", "normal")
    assert not np.allclose(per_class.maps[0], per_class.maps[1])  # class-specific
    blocks = model.model.blocks
    assert all(b.attn.fused_attn == blocks[0].attn.fused_attn for b in blocks)
    # Grad-CAM (inference's path) still works on the hybrid
    logits, cams = model.logits_and_cams(model.normalize(torch.from_numpy(
        rgb.transpose(2, 0, 1).copy())[None]))
    assert logits.shape == (1, 3) and cams.shape == (1, 3, 3, 5)


def test_train_cls_with_the_hybrid_backbone_then_explain_cli(tmp_path):
    import tifffile
    from PIL import Image

    from wsss_napari.cli import main
    from wsss_napari.models.checkpoint import load_model
    from wsss_napari.sample.synth import write_patch_dataset

    patches = write_patch_dataset(tmp_path / "p", 8, size=48, seed=4)
    out = tmp_path / "hybrid.safetensors"
    assert main(["train-cls", str(patches), "--out", str(out), "--backbone", "wsss_hybrid_test",
                 "--no-pretrained",
                 "--epochs", "1", "--batch-size", "4", "--crop-size", "32",
                 "--val-fraction", "0", "--device", "cpu"]) == 0
    model = load_model(out)
    assert model.config.arch == "gradcam" and model.config.backbone == "wsss_hybrid_test"

    image = sorted(patches.glob("*.png"))[0]
    tif = tmp_path / "att.tif"
    assert main(["explain", str(image), "--model", str(out), "--out", str(tif),
                 "--region", "8", "4", "32", "40"]) == 0
    with tifffile.TiffFile(tif) as tf:
        arr = tf.asarray()
        desc = json.loads(tf.pages[0].description)
    assert arr.shape == (4, 32, 40) and arr.dtype == np.float32
    assert desc["names"][0] == "rollout" and desc["names"][1] == "grad-rollout tumor"
    assert desc["region"] == {"y": 8, "x": 4, "height": 32, "width": 40}
    assert Image.open(image).size == (48, 48)

    cnn = tmp_path / "cnn.safetensors"
    from wsss_napari.models.cam import CamNet
    from wsss_napari.models.checkpoint import save_model
    from wsss_napari.models.config import ModelConfig

    save_model(CamNet(ModelConfig(backbone="test_resnet", input_size=48)), cnn)
    assert main(["explain", str(image), "--model", str(cnn), "--out",
                 str(tmp_path / "no.tif")]) == 2  # a CNN has no attention: one-line error
    assert not (tmp_path / "no.tif").exists()
