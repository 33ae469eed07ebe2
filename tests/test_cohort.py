"""`slide` and `batch` on generated slides: a 2-worker process LocalCluster, a corrupt file,
a slide without mpp, a worker killed mid-slide, resume, and bad input (one line each)."""

from __future__ import annotations

import csv
import json
import os
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from wsss_napari.cli import main
from wsss_napari.io.export import read_exported_mask

distributed = pytest.importorskip("distributed")

#: small, fast CAM runs (model at 1 um/px on 0.5 um/px slides: 128 px tiles)
FLAGS = ["--device", "cpu", "--scales", "1", "--tile-size", "128", "--halo", "16"]
GOOD = ("a", "b", "c")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """3 generated pyramidal slides, a truncated TIFF, a PNG without mpp and a tiny model."""
    from PIL import Image

    from wsss_napari.models.checkpoint import save_model
    from wsss_napari.models.config import ModelConfig
    from wsss_napari.models.registry import build_model
    from wsss_napari.sample.synth import make_tissue, write_pyramidal_tiff

    d = tmp_path_factory.mktemp("cohort")
    slides = [write_pyramidal_tiff(d / f"{n}.tif", 512, 640, seed=i, mpp=0.5)
              for i, n in enumerate(GOOD)]
    bad = d / "broken.tif"
    bad.write_bytes(Path(slides[0]).read_bytes()[:5000])
    rgb, _ = make_tissue(384, 384, seed=9)
    nompp = d / "nompp.png"
    Image.fromarray(rgb).save(nompp)
    torch.manual_seed(0)
    model = d / "tiny.safetensors"
    save_model(build_model(ModelConfig(backbone="test_resnet", input_size=64, mpp=1.0)).eval(),
               model)
    return {"dir": d, "slides": [str(s) for s in slides], "bad": str(bad), "nompp": str(nompp),
            "model": str(model)}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A 2-worker process LocalCluster (workers inherit the CAM cache folder)."""
    from distributed import Client, LocalCluster

    old = os.environ.get("WSSS_CACHE_DIR")
    os.environ["WSSS_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    lc = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                      memory_limit="3GiB")
    client = Client(lc)
    try:
        yield lc.scheduler_address, client
    finally:
        client.close()
        lc.close()
        if old is None:
            os.environ.pop("WSSS_CACHE_DIR", None)
        else:
            os.environ["WSSS_CACHE_DIR"] = old


def _table(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "cohort.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len({r["slide"] for r in rows})  # one row per slide
    return {Path(r["slide"]).stem: r for r in rows}


def _geometries(path: Path) -> list:
    fc = json.loads(path.read_text())
    return sorted(json.dumps(f["geometry"], sort_keys=True) for f in fc["features"])


def _batch(cohort, out, *extra):
    return main(["batch", *cohort["slides"], cohort["bad"], cohort["nompp"], "--out", str(out),
                 "--model", cohort["model"], *FLAGS, *extra])


def test_batch_on_two_workers_matches_the_slide_command_and_resumes(cohort, cluster, tmp_path,
                                                                     capsys):
    address, _ = cluster
    out = tmp_path / "batch"
    assert _batch(cohort, out, "--scheduler", address) == 1  # the broken slide failed
    rows = _table(out)
    assert {k: r["status"] for k, r in rows.items()} == {
        "a": "done", "b": "done", "c": "done", "broken": "failed", "nompp": "done"}
    broken = rows["broken"]
    assert "truncated" in broken["error"] and "\n" not in broken["error"]
    assert "Traceback" in Path(broken["log"]).read_text()
    assert not list(out.glob("broken.*.ome.tif")) and not (out / "broken.done.json").exists()
    # no mpp: areas in level-0 pixels, and the table says so
    nompp = rows["nompp"]
    assert nompp["area_unit"] == "px" and nompp["tumor_mm2"] == "" and nompp["mpp"] == ""
    assert float(nompp["stroma_px"]) + float(nompp["tumor_px"]) + float(nompp["normal_px"]) > 0

    # the same slides through the single-process command: the same masks, reports, polygons
    single = tmp_path / "single"
    for s in cohort["slides"]:
        assert main(["slide", s, "--out", str(single), "--model", cohort["model"], *FLAGS]) == 0
    for name in GOOD:
        row = rows[name]
        mask, meta = read_exported_mask(row["mask"])
        ref, ref_meta = read_exported_mask(single / f"{name}.mask.ome.tif")
        np.testing.assert_array_equal(mask, ref)
        assert meta["geometry"] == ref_meta["geometry"]
        assert meta["geometry"].downsample == 8.0 and meta["geometry"].mpp == 0.5
        assert _geometries(Path(row["geojson"])) == _geometries(single / f"{name}.geojson")
        rep = json.loads(Path(row["report"]).read_text())
        ref_rep = json.loads((single / f"{name}.report.json").read_text())
        assert rep == ref_rep
        assert row["tumor_stroma_ratio"] == ("" if rep["tumor_stroma_ratio"] is None
                                             else str(round(rep["tumor_stroma_ratio"], 6)))
        # areas: mask pixels x (downsample * mpp)^2
        counts = np.bincount(mask.ravel(), minlength=4)
        assert float(row["stroma_mm2"]) == pytest.approx(counts[1] * (8 * 0.5) ** 2 * 1e-6,
                                                         abs=1e-6)
    capsys.readouterr()

    # resume: finished slides are skipped (files untouched), the broken one is tried again
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("[abc].*")}
    assert _batch(cohort, out, "--scheduler", address) == 1
    rows = _table(out)
    assert [rows[n]["status"] for n in (*GOOD, "nompp")] == ["skipped"] * 4
    assert rows["broken"]["status"] == "failed"
    assert {p: p.stat().st_mtime_ns for p in out.glob("[abc].*")} == stamps
    # other post-processing: another params hash, so the slides are done again
    assert _batch(cohort, out, "--scheduler", address, "--bg-exponent", "0.5") == 1
    rows2 = _table(out)
    assert rows2["a"]["status"] == "done" and rows2["a"]["params_hash"] != rows["a"]["params_hash"]


class _KillOnce(distributed.WorkerPlugin):
    """Kills its worker process (SIGKILL) the first time a slide's report is about to be
    written: after its mask and GeoJSON files, before its report and done-marker."""

    name = "wsss-kill-once"

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def setup(self, worker) -> None:
        import wsss_napari.slide_job as job

        original = job.write_report
        marker = self.marker

        def write_report(report, *args, **kw):
            if not os.path.exists(marker):
                Path(marker).write_text(report.slide)
                os.kill(os.getpid(), signal.SIGKILL)
            return original(report, *args, **kw)

        job.write_report = write_report


def test_a_worker_killed_mid_slide_loses_nothing_and_duplicates_nothing(cohort, cluster,
                                                                        tmp_path):
    import cloudpickle

    address, client = cluster
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    marker = tmp_path / "killed"
    client.register_plugin(_KillOnce(str(marker)))
    out = tmp_path / "out"
    try:
        rc = main(["batch", *cohort["slides"], "--out", str(out), "--model", cohort["model"],
                   "--scheduler", address, *FLAGS])
    finally:
        client.unregister_worker_plugin(_KillOnce.name)
    assert marker.exists()  # a worker did die while writing a slide
    assert rc == 0
    rows = _table(out)
    assert sorted(rows) == list(GOOD) and all(r["status"] == "done" for r in rows.values())
    expected = {f"{n}.{suffix}" for n in GOOD for suffix in (
        "mask.ome.tif", "mask.ome.tif.run.json", "geojson", "geojson.run.json",
        "report.json", "report.csv", "done.json")} | {"cohort.csv"}
    assert {p.name for p in out.iterdir()} == expected  # no temporary or duplicate file
    killed = Path(marker.read_text()).stem
    done = json.loads((out / f"{killed}.done.json").read_text())
    mask, _ = read_exported_mask(out / f"{killed}.mask.ome.tif")
    assert done["report"]["area_px"]["stroma"] == pytest.approx(
        float((mask == 1).sum()) * 64)


def test_batch_without_an_address_starts_a_local_cluster(cohort, tmp_path, capsys,
                                                         monkeypatch):
    monkeypatch.setenv("WSSS_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "local"
    args = [cohort["nompp"], "--out", str(out), "--model", cohort["model"], *FLAGS]
    assert main(["slide", *args]) == 0
    # done by `slide`: the local worker finds it finished (and needs no torch to say so)
    assert main(["batch", *args, "--workers", "1"]) == 0
    text = capsys.readouterr().out
    assert "dask dashboard: http" in text and "(1 workers)" in text
    assert _table(out)["nompp"]["status"] == "skipped"


def _one_error_line(capsys, command: str, words: str) -> None:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("wsss-napari")]
    assert len(lines) == 1 and lines[0].startswith(f"wsss-napari {command}: error:")
    assert words in lines[0]


def test_bad_input_is_one_line_and_writes_nothing(cohort, tmp_path, capsys):
    out = tmp_path / "never"
    common = ["--model", cohort["model"], *FLAGS]
    assert main(["batch", cohort["slides"][0], "--out", str(out), "--scheduler",
                 "tcp://127.0.0.1:9", "--timeout", "1", *common]) == 2
    _one_error_line(capsys, "batch", "cannot reach the dask scheduler at 'tcp://127.0.0.1:9'")
    assert not out.exists()

    a_file = tmp_path / "results"
    a_file.write_text("keep me")
    for cmd, args in (("batch", [cohort["slides"][0]]), ("slide", [cohort["slides"][0]])):
        assert main([cmd, *args, "--out", str(a_file), *common]) == 2
        _one_error_line(capsys, cmd, "is a file")
    assert a_file.read_text() == "keep me"

    assert main(["slide", cohort["bad"], "--out", str(out), *common]) == 2
    _one_error_line(capsys, "slide", "truncated")
    assert not out.exists()

    assert main(["batch", "--list", str(tmp_path / "missing.txt"), "--out", str(out),
                 *common]) == 2
    _one_error_line(capsys, "batch", "cannot read the slide list")
    twins = [cohort["slides"][0], str(tmp_path / "other" / Path(cohort["slides"][0]).name)]
    assert main(["batch", *twins, "--out", str(out), *common]) == 2
    _one_error_line(capsys, "batch", "would write the same outputs")
    assert not out.exists()
