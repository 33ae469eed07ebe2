"""The edit store keeps every painted pixel on disk: round trips, crash recovery, autosave."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from wsss_napari import WsssError
from wsss_napari.corrections.autosave import Autosaver
from wsss_napari.corrections.store import (
    UNEDITED,
    EditStore,
    edits_path,
    slide_identity,
)


@pytest.fixture
def slide_file(tmp_path):
    p = tmp_path / "slides" / "case1.svs"
    p.parent.mkdir()
    p.write_bytes(b"not really a slide, but it has a size and an mtime")
    return p


def _open(slide_file, shape=(1000, 1300), ds=4.0, tile=256):
    return EditStore.open_or_create(edits_path(slide_file), slide_identity(slide_file, mpp=0.5),
                                    shape, ds, tile=tile)


def test_write_read_merge_round_trip(slide_file):
    store = _open(slide_file)
    assert store.root == slide_file.parent / "case1.svs.wsss" / "edits.zarr"
    assert store.edited_tiles() == []
    labels = np.full((300, 300), UNEDITED, np.uint8)
    labels[10:100, 10:200] = 1
    assert store.write(200, 200, labels) == 90 * 190
    # only the pixels painted are stored; the rest of the region stays "not edited"
    got = store.read(200, 200, 300, 300)
    np.testing.assert_array_equal(got, labels)
    # an explicit edited mask writes exactly those pixels, 255 never erases an edit
    m = np.zeros((4, 4), bool)
    m[0, 0] = True
    store.write(210, 210, np.full((4, 4), 2, np.uint8), edited_mask=m)
    store.write(211, 211, np.full((2, 2), UNEDITED, np.uint8))
    assert store.read(210, 210, 2, 2).tolist() == [[2, 1], [1, 1]]
    # tiles are stamped only where pixels were written (rows 210..299, cols 210..399 at 256)
    store.write(900, 900, np.full((5, 5), UNEDITED, np.uint8))
    tiles = {(t.ty, t.tx) for t in store.edited_tiles()}
    assert tiles == {(0, 0), (0, 1), (1, 0), (1, 1)}
    base = np.full(store.shape, 3, np.uint8)
    merged = store.merged(0, 0, *store.shape, base)
    assert (merged == 1).sum() == 90 * 190 - 1 and (merged == 2).sum() == 1
    # regions reaching outside the mask are clipped, not an error
    assert store.read(-5, -5, 10, 10)[:5].tolist() == [[UNEDITED] * 10] * 5
    view = store.merged_view(base)
    np.testing.assert_array_equal(np.asarray(view), merged)
    np.testing.assert_array_equal(view[200:300:3, 100:500:7], merged[200:300:3, 100:500:7])
    assert store.edited_pixel_counts() == {"stroma": 90 * 190 - 1, "normal": 1}
    # clearing forgets edits and un-marks tiles left empty
    store.clear(0, 0, 1000, 256)
    assert {(t.ty, t.tx) for t in store.edited_tiles()} == {(0, 1), (1, 1)}


def test_reopen_checks_geometry_and_slide(slide_file, tmp_path):
    store = _open(slide_file)
    store.write(0, 0, np.zeros((5, 5), np.uint8))
    again = _open(slide_file)
    assert again.read(0, 0, 5, 5).max() == 0 and again.slide_id["mpp"] == 0.5
    with pytest.raises(WsssError, match="downsample"):
        _open(slide_file, ds=8.0)
    # another file (different size) must not silently inherit these edits
    slide_file.write_bytes(b"a different slide")
    with pytest.raises(WsssError, match="different file"):
        _open(slide_file)
    with pytest.raises(WsssError, match="not a wsss-napari edit store"):
        EditStore.open(tmp_path)
    # a project folder instead of the slide's folder
    proj = edits_path(slide_file, project_dir=tmp_path / "project")
    assert proj == tmp_path / "project" / "case1.svs.wsss" / "edits.zarr"


def test_unwritable_location_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(WsssError, match="cannot create"):
        EditStore.open_or_create(blocker / "edits.zarr", "s", (10, 10), 1.0)


def test_edits_survive_a_crash(slide_file):
    """Write from a process that dies without closing anything; a new process finds the edits."""
    root = edits_path(slide_file)
    child = textwrap.dedent(f"""
        import os, numpy as np
        from wsss_napari.corrections.autosave import Autosaver
        from wsss_napari.corrections.store import EditStore
        s = EditStore.open_or_create({str(root)!r}, {{"name": "case1"}}, (600, 600), 2.0, tile=128)
        lab = np.full((50, 70), 255, np.uint8); lab[5:45, 5:65] = 2
        s.write(300, 400, lab)
        a = Autosaver(s, delay=60)
        a.mark(0, 0, 3, 3, np.zeros((3, 3), np.uint8))
        a.flush_now()
        a.mark(10, 10, 3, 3, np.ones((3, 3), np.uint8))  # never flushed: lost by the crash
        os._exit(0)  # no close, no atexit: a crash
    """)
    subprocess.run([sys.executable, "-c", child], check=True, timeout=120)
    reader = textwrap.dedent(f"""
        from wsss_napari.corrections.store import EditStore
        s = EditStore.open({str(root)!r})
        r = s.read(300, 400, 50, 70)
        print(int((r == 2).sum()), int((s.read(0, 0, 3, 3) == 0).sum()),
              int((s.read(10, 10, 3, 3) == 1).sum()), len(s.edited_tiles()))
    """)
    out = subprocess.run([sys.executable, "-c", reader], check=True, timeout=120,
                         capture_output=True, text=True).stdout.split()
    assert out == [str(40 * 60), "9", "0", "2"]


def test_autosaver_writes_within_the_delay_and_flushes_on_close(slide_file):
    store = _open(slide_file)
    errors = []
    with Autosaver(store, delay=0.3, on_error=errors.append) as saver:
        lab = np.full((20, 20), 1, np.uint8)
        saver.mark(100, 100, 20, 20, lab)
        # the same region painted again: the later labels win, earlier pixels stay edited
        m = np.zeros((20, 20), bool)
        m[:5] = True
        saver.mark(100, 100, 20, 20, np.full((20, 20), 2, np.uint8), edited_mask=m)
        deadline = time.monotonic() + 10
        while saver.pending and time.monotonic() < deadline:
            time.sleep(0.02)
        assert saver.pending == 0
        assert (store.read(100, 100, 20, 20) == 2).all()
        # close() flushes what is still pending
        saver.delay = 60
        saver.mark(0, 0, 2, 2, np.zeros((2, 2), np.uint8))
    assert store.read(0, 0, 2, 2).tolist() == [[0, 0], [0, 0]]
    assert not errors
    with Autosaver(store) as saver, pytest.raises(WsssError, match="shape"):
        saver.mark(0, 0, 3, 3, np.zeros((2, 2), np.uint8))


def _as_format_1(store: EditStore) -> None:
    """Rewrite a store's attrs as the format-1 writer left them (no encoding record)."""
    attrs = dict(store._group.attrs)
    attrs["format_version"] = 1
    attrs.pop("encoding", None)
    store._group.attrs.clear()
    store._group.attrs.update(attrs)


def test_format_1_stores_are_refused_in_one_line_then_upgraded(slide_file):
    from wsss_napari.corrections.migrate import upgrade_store
    from wsss_napari.corrections.store import FORMAT_VERSION

    store = _open(slide_file)
    labels = np.full((40, 40), UNEDITED, np.uint8)
    labels[:20] = 0  # "tumor": in format 1 maybe napari's eraser
    labels[20:] = 2
    store.write(300, 300, labels)
    _as_format_1(store)
    with pytest.raises(WsssError) as err:
        EditStore.open(store.root)
    message = str(err.value)
    assert "\n" not in message and "format 1" in message and "eraser" in message
    assert "upgrade_store" in message

    assert upgrade_store(store.root, drop_tumor=True) == 20 * 40
    again = EditStore.open(store.root)
    assert again._group.attrs["format_version"] == FORMAT_VERSION
    region = again.read(300, 300, 40, 40)
    assert (region[:20] == UNEDITED).all() and (region[20:] == 2).all()
    assert upgrade_store(store.root) == 0  # already current: untouched


def test_upgrade_keeps_tumor_unless_asked(slide_file):
    from wsss_napari.corrections.migrate import upgrade_store

    store = _open(slide_file)
    store.write(0, 0, np.zeros((10, 10), np.uint8))
    _as_format_1(store)
    assert upgrade_store(store.root) == 0
    assert (EditStore.open(store.root).read(0, 0, 10, 10) == 0).all()


def test_newer_store_format_is_refused(slide_file):
    store = _open(slide_file)
    store._group.attrs["format_version"] = 99
    with pytest.raises(WsssError, match="newer than this wsss-napari"):
        EditStore.open(store.root)
