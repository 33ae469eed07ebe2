import json

import pytest

from wsss_napari import WsssError
from wsss_napari.cli import main
from wsss_napari.cli._params import add_params_arguments, params_from_args
from wsss_napari.params import CamParams, PostprocParams, RunRecord, WhiteMethod


def test_roundtrip_dict_and_file(tmp_path):
    p = PostprocParams(bg_exponent=16.0, white_method=WhiteMethod.SATURATION)
    assert PostprocParams.from_dict(p.to_dict()) == p
    f = tmp_path / "p.json"
    f.write_text(json.dumps({"postproc": p.to_dict()}))
    assert PostprocParams.from_file(f) == p
    y = tmp_path / "p.yaml"
    y.write_text("bg_exponent: 3.5\nwhite_method: none\n")
    q = PostprocParams.from_file(y)
    assert q.bg_exponent == 3.5 and q.white_method is WhiteMethod.NONE


def test_out_of_range_and_unknown_are_refused():
    with pytest.raises(WsssError, match="bg_exponent"):
        PostprocParams(bg_exponent=-1)
    with pytest.raises(WsssError, match="unknown"):
        PostprocParams.from_dict({"nope": 1})
    with pytest.raises(WsssError, match="scales"):
        CamParams(scales=())
    with pytest.raises(WsssError, match="white_method"):
        PostprocParams(white_method="purple")


def test_cli_flags_from_fields(tmp_path):
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--config")
    add_params_arguments(parser, CamParams)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("batch_size: 4\nflip: true\n")
    args = parser.parse_args(["--config", str(cfg), "--scales", "1", "2", "--no-flip"])
    p = params_from_args(args, CamParams)
    assert p.scales == (1.0, 2.0) and p.batch_size == 4 and p.flip is False


def test_run_record_collects_params():
    rec = RunRecord.make(PostprocParams(), CamParams(), model_hash="abc")
    d = json.loads(rec.to_json())
    assert d["params"]["postproc"]["bg_exponent"] == PostprocParams().bg_exponent
    assert d["params"]["cam"]["scales"] == list(CamParams().scales)
    assert RunRecord.from_dict(d).model_hash == "abc"


def test_cli_without_command_prints_help(capsys):
    assert main([]) == 1
    assert "wsss-napari" in capsys.readouterr().out
