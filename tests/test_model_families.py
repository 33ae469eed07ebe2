"""Model families come from one registry (models.families): config validation, the builder,
TrainSegParams.decoder, the CLI's --decoder choices and the widgets' form all read it."""

import argparse

import pytest

from wsss_napari import WsssError
from wsss_napari.cli import build_parser
from wsss_napari.models import ModelConfig, build_model
from wsss_napari.models.families import CAM_ARCHS, FAMILIES, SEG_ARCHS, archs
from wsss_napari.params import TrainSegParams


def _subparser(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def test_cli_decoder_choices_are_the_registry_seg_archs():
    p = _subparser("train-seg")
    action = next(a for a in p._actions if "--decoder" in a.option_strings)
    assert tuple(action.choices) == SEG_ARCHS == archs("seg")
    assert set(SEG_ARCHS) == {"deeplabv3plus", "unet", "segformer"}
    with pytest.raises(SystemExit):
        p.parse_args(["d", "m", "--output", "x.safetensors", "--decoder", "fcn"])


def test_params_and_config_validation_use_the_registry():
    for arch in SEG_ARCHS:
        assert TrainSegParams(decoder=arch).decoder == arch
        ModelConfig(kind="seg", arch=arch)
    for arch in CAM_ARCHS:
        ModelConfig(kind="cam", arch=arch)
    with pytest.raises(WsssError, match="decoder must be one of deeplabv3plus, unet"):
        TrainSegParams(decoder="fcn")
    with pytest.raises(WsssError, match="arch for kind 'seg'"):
        ModelConfig(kind="seg", arch="camnet")


@pytest.mark.parametrize("fam", FAMILIES, ids=lambda f: f"{f.kind}-{f.arch}")
def test_every_family_builds_its_class(fam):
    backbone = "test_vit" if fam.arch == "gradcam" else "test_resnet"
    model = build_model(ModelConfig(kind=fam.kind, arch=fam.arch, backbone=backbone,
                                    input_size=64))
    assert type(model).__name__ == fam.cls
    if fam.head:
        assert type(model.decoder).__name__ == fam.head


def test_params_form_offers_the_registry_decoders(qtbot):
    from qtpy.QtWidgets import QComboBox

    from wsss_napari._widgets._paramform import ParamsForm

    form = ParamsForm(TrainSegParams)
    qtbot.addWidget(form)
    box = form.controls["decoder"]
    assert isinstance(box, QComboBox)
    assert tuple(box.itemText(i) for i in range(box.count())) == SEG_ARCHS
    box.setCurrentText("unet")
    assert form.params.decoder == "unet"
