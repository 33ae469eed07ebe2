"""Checkpoints: one safetensors file; round trips exactly; refuses anything else clearly."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from wsss_napari import WsssError
from wsss_napari.models.checkpoint import (
    default_model_path,
    file_hash,
    load_model,
    read_config,
    save_model,
)
from wsss_napari.models.config import ModelConfig
from wsss_napari.models.registry import build_model

torch.set_num_threads(1)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return build_model(ModelConfig(backbone="test_resnet", input_size=64, mpp=0.5)).eval()


@pytest.mark.parametrize("backbone", ["test_resnet", "test_vit"])
def test_roundtrip_outputs_equal(tmp_path, backbone):
    arch = "gradcam" if backbone == "test_vit" else "camnet"
    m = build_model(ModelConfig(backbone=backbone, arch=arch, input_size=64)).eval()
    path = tmp_path / "m.safetensors"
    digest = save_model(m, path, extra_meta={"data": "synth"})
    assert digest == file_hash(path) and len(digest) == 64
    loaded = load_model(path)
    assert loaded.config == m.config and not loaded.training
    assert loaded.file_hash == digest
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), m(x), rtol=0, atol=0)


def test_half_weights_load_as_float32(tmp_path, model):
    full, half = tmp_path / "f.safetensors", tmp_path / "h.safetensors"
    save_model(model, full)
    save_model(model, half, half=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    loaded = load_model(half)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), model(x), rtol=1e-2, atol=1e-2)


def test_corrupt_truncated_foreign_and_pickle_refused(tmp_path, model):
    good = tmp_path / "good.safetensors"
    save_model(model, good)
    data = good.read_bytes()

    missing = tmp_path / "nope.safetensors"
    with pytest.raises(WsssError, match="not found"):
        load_model(missing)
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(WsssError, match="empty"):
        load_model(empty)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"this is not a checkpoint at all" * 10)
    with pytest.raises(WsssError, match="not a wsss-napari checkpoint / corrupt"):
        load_model(junk)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(WsssError, match="corrupt.*truncated"):
        load_model(cut)
    foreign = tmp_path / "timm.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(WsssError, match="not a wsss-napari checkpoint.*--weights"):
        load_model(foreign)
    pickled = tmp_path / "model.pth"
    torch.save(model.state_dict(), pickled)
    with pytest.raises(WsssError, match="pickle"):
        load_model(pickled)


def test_mismatched_weights_and_unknown_backbone_refused(tmp_path, model):
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    four = model.config.replace(class_names=("a", "b", "c", "d"),
                                class_colors=((0, 0, 0),) * 4)
    bad = tmp_path / "bad.safetensors"
    save_file(sd, str(bad), metadata={"wsss_napari": json.dumps(four.to_dict()),
                                      "format_version": "1"})
    with pytest.raises(WsssError, match="do not match.*wrong shape.*classifier"):
        load_model(bad)
    extra = tmp_path / "extra.safetensors"
    save_file({**sd, "surprise": torch.zeros(1)}, str(extra),
              metadata={"wsss_napari": json.dumps(model.config.to_dict()), "format_version": "1"})
    with pytest.raises(WsssError, match="unexpected.*surprise"):
        load_model(extra)
    unknown = tmp_path / "unknown.safetensors"
    cfg = {**model.config.to_dict(), "backbone": "resnet_from_the_future"}
    save_file(sd, str(unknown), metadata={"wsss_napari": json.dumps(cfg), "format_version": "1"})
    with pytest.raises(WsssError, match="does not know"):
        load_model(unknown)
    assert read_config(bad).num_classes == 4


def test_default_model(tmp_path):
    if default_model_path().is_file():
        m = load_model("default")
        assert m.config.kind == "cam"
    else:
        with pytest.raises(WsssError, match="default CAM model is not installed"):
            load_model("default")


def test_backbone_weights_from_plain_timm_file(tmp_path):
    import timm

    src = timm.create_model("test_resnet", pretrained=False)
    for p in src.parameters():
        torch.nn.init.constant_(p, 0.5)
    st = tmp_path / "timm.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(st))
    pth = tmp_path / "timm.pth"
    torch.save(src.state_dict(), pth)
    for f in (st, pth):
        m = build_model(ModelConfig(backbone="test_resnet"), weights=str(f))
        rep = m.load_report
        assert rep["loaded"] > 0 and rep["unexpected"] >= 2  # the ImageNet head (fc)
        own = m.backbone.state_dict()
        assert all(torch.all(own[k] == 0.5) for k in own if k.endswith(".weight"))
    other = tmp_path / "other.safetensors"
    save_file({"decoder.x": torch.zeros(3)}, str(other))
    with pytest.raises(WsssError, match="matches none"):
        build_model(ModelConfig(backbone="test_resnet"), weights=str(other))


def test_recommended_postproc_stored_in_the_checkpoint(tmp_path, model):
    from wsss_napari.models.checkpoint import recommended_postproc, with_recommended_postproc
    from wsss_napari.params import PostprocParams

    path = tmp_path / "m.safetensors"
    old = save_model(model, path, half=True, extra_meta={"data": "synth"})
    assert recommended_postproc(load_model(path)) == PostprocParams()  # none stored yet
    tuned = PostprocParams(bg_exponent=3.0, white_threshold=225.0, min_region=50)
    new = with_recommended_postproc(path, tuned, info={"miou": 0.9})
    assert new != old and new == file_hash(path)
    loaded = load_model(path)
    assert recommended_postproc(loaded) == tuned == recommended_postproc(path)
    assert recommended_postproc(loaded.config) == tuned
    assert loaded.config.extra["postproc_tune"] == {"miou": 0.9}
    # weights (still float16 on disk) and the rest of the header are untouched
    from safetensors import safe_open

    with safe_open(str(path), "pt") as fh:
        assert fh.metadata()["data"] == "synth"
        name = next(iter(fh.keys()))
        assert fh.get_tensor(name).dtype == torch.float16
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), model(x), rtol=1e-2, atol=1e-2)
    with pytest.raises(WsssError):
        with_recommended_postproc(tmp_path / "missing.safetensors", tuned)


def test_a_safetensors_header_length_starting_with_0x80_is_not_a_pickle(tmp_path):
    from wsss_napari.models.checkpoint import read_header

    for pad in range(300):  # some metadata length gives a header length of 0x..80
        path = tmp_path / f"m{pad}.safetensors"
        save_file({"w": torch.zeros(2)}, str(path), metadata={"x": "a" * pad})
        if path.read_bytes()[:1] == b"\x80":
            assert read_header(path)["__metadata__"]["x"] == "a" * pad
            return
    pytest.fail("no header length with a 0x80 low byte was produced")
