"""Patch data sets: label parsing, the up-front bad-input report, guarded loading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wsss_napari import WsssError
from wsss_napari.train.data import (
    PatchDataset,
    labels_from_filename,
    parse_labels,
    resolve_bad,
    scan_patches,
    split_items,
)


def _png(path: Path, mode: str = "RGB", size: int = 32, value: int = 128) -> Path:
    rng = np.random.default_rng(len(path.name))
    if mode == "RGB":
        arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    elif mode == "RGBA":
        arr = rng.integers(0, 256, (size, size, 4), dtype=np.uint8)
    elif mode == "L":
        arr = np.full((size, size), value, np.uint8)
    elif mode == "I;16":
        Image.fromarray(np.full((size, size), 1000, np.uint16)).save(path)
        return path
    else:
        raise ValueError(mode)
    Image.fromarray(arr).save(path)
    return path


@pytest.mark.parametrize("text,expected", [
    ("[1, 0, 1]", (1, 0, 1)),
    ("[1,0,1]", (1, 0, 1)),
    ("1 1 0", (1, 1, 0)),
    ("0;0;1", (0, 0, 1)),
    ("tumor;normal", (1, 0, 1)),
    ("[stroma]", (0, 1, 0)),
])
def test_parse_labels_accepts_common_spellings(text, expected):
    assert parse_labels(text) == expected


@pytest.mark.parametrize("text", ["[1, 0]", "[1, 0, 1, 1]", "[a, b, c]", "[2, 0, 1]", ""])
def test_parse_labels_rejects_malformed(text):
    with pytest.raises(WsssError, match="label"):
        parse_labels(text)


def test_labels_from_challenge_file_names():
    assert labels_from_filename("436219-9328-56427-[1, 1, 0].png") == (1, 1, 0)
    assert labels_from_filename("/x/y/a-b-[0,0,1].png") == (0, 0, 1)
    with pytest.raises(WsssError, match="has no label"):
        labels_from_filename("patch_001.png")


def test_real_training_examples_are_read(shared_data):
    folder = shared_data / "wsss4luad" / "training_examples"
    report = scan_patches(folder)
    assert len(report.items) == 4
    assert not [p for p in report.problems if p.path is not None]
    by_name = {it.path.name: it.labels for it in report.items}
    assert by_name["436219-9328-56427-[1, 1, 0].png"] == (1, 1, 0)


def test_bad_input_report_names_each_file_and_reason(tmp_path):
    _png(tmp_path / "good1-[1, 0, 0].png")
    _png(tmp_path / "good2-[0, 1, 0].png")
    _png(tmp_path / "alpha-[1, 1, 0].png", mode="RGBA")
    _png(tmp_path / "grey-[0, 1, 0].png", mode="L")
    _png(tmp_path / "deep-[1, 0, 0].png", mode="I;16")
    _png(tmp_path / "nolabel.png")
    _png(tmp_path / "badflags-[1, 0].png")
    good = (tmp_path / "good1-[1, 0, 0].png").read_bytes()
    (tmp_path / "corrupt-[1, 0, 0].png").write_bytes(good[: len(good) // 2])
    (tmp_path / "garbage-[0, 1, 0].png").write_bytes(b"not an image at all")

    report = scan_patches(tmp_path)
    names = sorted(it.path.name for it in report.items)
    assert names == ["alpha-[1, 1, 0].png", "good1-[1, 0, 0].png", "good2-[0, 1, 0].png",
                     "grey-[0, 1, 0].png"]
    bad = {p.path.name: p.reason for p in report.problems if p.path is not None}
    assert set(bad) == {"deep-[1, 0, 0].png", "nolabel.png", "badflags-[1, 0].png",
                        "corrupt-[1, 0, 0].png", "garbage-[0, 1, 0].png"}
    assert "corrupt" in bad["corrupt-[1, 0, 0].png"] or "unreadable" in bad["corrupt-[1, 0, 0].png"]
    assert "mode" in bad["deep-[1, 0, 0].png"]
    assert "no label" in bad["nolabel.png"]
    # the data set as a whole: nobody is labelled normal
    assert any(p.path is None and "normal" in p.reason for p in report.problems)
    assert any("RGBA" in n for n in report.notes) and any("grey" in n for n in report.notes)

    kept = resolve_bad(report, "skip")
    assert len(kept) == 4
    with pytest.raises(WsssError) as err:
        resolve_bad(report, "stop")
    msg = str(err.value)
    assert "corrupt-[1, 0, 0].png" in msg and "nolabel.png" in msg and "--on-bad skip" in msg

    # converted images load as RGB (alpha composited on white, grey expanded)
    ds = PatchDataset(kept)
    for i in range(len(ds)):
        rgb, mask, labels = ds[i]
        assert rgb.dtype == np.uint8 and rgb.shape == (32, 32, 3) and mask is None
        assert labels.shape == (3,)


def test_mask_size_mismatch_and_missing_mask(tmp_path):
    data, masks = tmp_path / "d", tmp_path / "m"
    data.mkdir()
    masks.mkdir()
    for name, msize in (("a-[1, 0, 1].png", 32), ("b-[0, 1, 1].png", 16), ("c-[1, 1, 0].png", 0)):
        _png(data / name)
        if msize:
            Image.fromarray(np.zeros((msize, msize), np.uint8), mode="L").save(masks / name)
    report = scan_patches(data, mask_dir=masks, require_masks=True)
    assert [it.path.name for it in report.items] == ["a-[1, 0, 1].png"]
    assert report.items[0].mask_path == masks / "a-[1, 0, 1].png"
    bad = {p.path.name: p.reason for p in report.problems if p.path is not None}
    assert "does not match" in bad["b-[0, 1, 1].png"]
    assert "no mask" in bad["c-[1, 1, 0].png"]


def test_csv_labels(tmp_path):
    _png(tmp_path / "x.png")
    _png(tmp_path / "y.png")
    csv = tmp_path / "labels.csv"
    csv.write_text('file,labels\nx.png,"[1, 0, 1]"\ny.png,stroma\nmissing.png,"[1,0,0]"\n'
                   "z.png\n")
    report = scan_patches(tmp_path, csv_path=csv)
    assert {it.path.name: it.labels for it in report.items} == {"x.png": (1, 0, 1),
                                                               "y.png": (0, 1, 0)}
    reasons = " ".join(str(p) for p in report.problems)
    assert "missing.png: file not found" in reasons and "expected 'file,labels'" in reasons


def test_empty_or_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(WsssError, match="does not exist"):
        scan_patches(tmp_path / "nope")
    with pytest.raises(WsssError, match="no images"):
        scan_patches(tmp_path)


def test_dataset_survives_a_file_vanishing_after_the_scan(tmp_path):
    for i in range(3):
        _png(tmp_path / f"p{i}-[1, 0, 0].png")
    items = resolve_bad(scan_patches(tmp_path), "skip")
    items[1].path.unlink()
    ds = PatchDataset(items)
    rgb, _, _ = ds[1]  # falls back to the next readable patch
    assert rgb.shape == (32, 32, 3)
    assert items[1].path in ds.failed


def test_split_is_deterministic_and_disjoint(tmp_path):
    for i in range(20):
        _png(tmp_path / f"p{i}-[{i % 2}, 1, 0].png", size=8)
    items = resolve_bad(scan_patches(tmp_path), "skip")
    a = split_items(items, 0.25, seed=3)
    b = split_items(items, 0.25, seed=3)
    assert a == b and len(a[1]) == 5
    assert not {it.path for it in a[0]} & {it.path for it in a[1]}
