"""predict / eval / tune commands on real files (WSSS4LUAD validation and generated data)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from wsss_napari.cli import main
from wsss_napari.params import PostprocParams


def test_eval_ground_truth_against_itself(wsss4luad_val, capsys):
    assert main(["eval", str(wsss4luad_val / "mask"), str(wsss4luad_val / "mask"), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["images"] == 31 and rep["miou"] == 1.0 and rep["miou_bg"] == 1.0
    assert rep["iou"]["normal"] == 1.0
    assert main(["eval", str(wsss4luad_val / "mask"), str(wsss4luad_val / "mask")]) == 0
    assert "mIoU (tumor/stroma/normal)" in capsys.readouterr().out


def test_eval_challenge_protocol_and_errors(wsss4luad_val, tmp_path, capsys):
    pred = tmp_path / "pred"
    pred.mkdir()
    for f in sorted((wsss4luad_val / "mask").glob("*.png"))[:3]:
        m = np.asarray(Image.open(f))
        out = Image.fromarray(np.zeros_like(m), mode="P")  # all tumor
        out.putpalette(Image.open(f).getpalette())
        out.save(pred / f.name)
    gt = tmp_path / "gt"
    gt.mkdir()
    for f in sorted(pred.iterdir()):
        shutil.copy(wsss4luad_val / "mask" / f.name, gt / f.name)
    args = ["eval", str(pred), str(gt), "--json"]
    assert main(args) == 0
    plain = json.loads(capsys.readouterr().out)
    assert main([*args, "--background-masks", str(wsss4luad_val / "background-mask")]) == 0
    forced = json.loads(capsys.readouterr().out)
    assert forced["iou"]["background"] == 1.0 and forced["iou"]["tumor"] > plain["iou"]["tumor"]
    # a missing prediction and a size mismatch are clear one-line errors
    shutil.copy(wsss4luad_val / "mask" / "10.png", gt / "10.png")
    assert main(args) == 2
    assert "no prediction for '10.png'" in capsys.readouterr().err
    (gt / "10.png").unlink()
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(pred / sorted(pred.iterdir())[0].name)
    assert main(args) == 2
    assert "ground truth is" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from wsss_napari.models.checkpoint import save_model
    from wsss_napari.models.config import ModelConfig
    from wsss_napari.models.registry import build_model

    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_model(build_model(ModelConfig(backbone="test_resnet", input_size=64)).eval(), path)
    return path


@pytest.mark.slow
def test_predict_then_eval_then_tune(tiny_model, tmp_path, capsys):
    import torch

    from wsss_napari.sample.synth import write_patch_dataset

    torch.set_num_threads(1)
    data = write_patch_dataset(tmp_path / "data", n=3, size=96, seed=0)
    images, gts = data, data / "masks"
    bg = tmp_path / "bg"
    bg.mkdir()
    for f in gts.glob("*.png"):
        Image.fromarray((np.asarray(Image.open(f)) == 3).astype(np.uint8)).save(bg / f.name)
    out = tmp_path / "pred"
    cam = ["--scales", "1", "--crop-size", "64"]
    assert main(["predict", str(tiny_model), str(images), "--out", str(out),
                 "--background-masks", str(bg), "--bg-exponent", "4", *cam]) == 0
    names = sorted(f.name for f in images.glob("*.png"))
    assert sorted(f.name for f in out.glob("*.png")) == names
    for n in names:
        im = Image.open(out / n)
        m, g = np.asarray(im), np.asarray(Image.open(gts / n))
        assert im.mode == "P" and m.shape == g.shape and m.max() <= 3
        assert (m[g == 3] == 3).all()  # forced by the background masks
    assert json.loads((out / "predict.run.json").read_text())["params"]["postproc"][
        "bg_exponent"] == 4.0
    capsys.readouterr()
    assert main(["eval", str(out), str(gts), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 3
    grid = tmp_path / "grid.yaml"
    grid.write_text("bg_exponent: [2, 8]\nmin_region: [0, 50]\n")
    best = tmp_path / "best.yaml"
    assert main(["tune", str(tiny_model), str(images), str(gts), "--grid", str(grid),
                 "--out", str(best), "--background-masks", str(bg), *cam]) == 0
    text = capsys.readouterr().out
    assert "bg_exponent" in text and "best parameters written" in text
    assert PostprocParams.from_file(best).bg_exponent in (2.0, 8.0)
    assert main(["predict", str(tiny_model), str(images), "--out", str(tmp_path / "p2"),
                 "--params", str(best), *cam]) == 0


def test_predict_mask_with_a_segmentation_model(monkeypatch):
    import torch

    from wsss_napari.inference import predict
    from wsss_napari.models.config import ModelConfig
    from wsss_napari.models.registry import build_model

    torch.set_num_threads(1)
    model = build_model(ModelConfig(kind="seg", arch="deeplabv3plus", backbone="test_resnet",
                                    input_size=64)).eval()
    img = np.random.default_rng(0).integers(0, 255, (70, 90, 3), dtype=np.uint8)
    bg = np.zeros((70, 90), np.uint8)
    bg[:5] = 1
    whole = predict.predict_mask(model, img, background=bg)
    assert whole.shape == (70, 90) and whole.dtype == np.uint8 and whole.max() <= 3
    assert (whole[:5] == 3).all()
    tiled = predict.predict_mask(model, img)  # 64 px windows (input_size), stride 32
    assert tiled.shape == (70, 90) and tiled.max() <= 3


@pytest.mark.slow
def test_tune_synthetic_into_model_then_predict_uses_it(tiny_model, tmp_path, capsys):
    import shutil

    import torch

    from wsss_napari.models.checkpoint import read_config, recommended_postproc
    from wsss_napari.sample.synth import write_patch_dataset

    torch.set_num_threads(1)
    model = tmp_path / "m.safetensors"
    shutil.copy(tiny_model, model)
    grid = tmp_path / "grid.yaml"
    grid.write_text("bg_exponent: [1, 64]\nwhite_threshold: [200, 230]\n")
    cam = ["--scales", "1", "--crop-size", "64"]
    assert main(["tune", str(model), "--synthetic", "2", "--synthetic-size", "96",
                 "--grid", str(grid), "--out", str(tmp_path / "best.json"),
                 "--into-model", str(model), *cam]) == 0
    assert "recommended post-processing stored" in capsys.readouterr().out
    best = PostprocParams.from_file(tmp_path / "best.json")
    assert recommended_postproc(model) == best
    assert read_config(model).extra["postproc_tune"]["data"].startswith("sample.synth")
    images = write_patch_dataset(tmp_path / "data", n=1, size=64, seed=0)
    out = tmp_path / "pred"
    assert main(["predict", str(model), str(images), "--out", str(out), *cam]) == 0
    assert "post-processing: recommended by the model" in capsys.readouterr().out
    record = json.loads((out / "predict.run.json").read_text())["params"]["postproc"]
    assert record["bg_exponent"] == best.bg_exponent
    assert main(["predict", str(model), str(images), "--out", str(out), "--bg-exponent", "5",
                 *cam]) == 0  # flags still override the recommendation
    assert "(+ command-line flags)" in capsys.readouterr().out
    assert json.loads((out / "predict.run.json").read_text())["params"]["postproc"][
        "bg_exponent"] == 5.0
    assert main(["tune", str(model), "--into-model", str(model)]) == 2  # no data given
