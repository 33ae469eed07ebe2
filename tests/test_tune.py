"""Grid search finds a known best on a synthetic case; its file loads back."""

from __future__ import annotations

import numpy as np
import pytest

from wsss_napari import WsssError
from wsss_napari.classes import BACKGROUND
from wsss_napari.params import PostprocParams
from wsss_napari.postproc.background import background_cutoff
from wsss_napari.progress import run_to_end
from wsss_napari.tune import TuneSample, default_grid, grid_search


def sample(seed: int) -> TuneSample:
    """CAMs for which only y = 16 splits tissue from glass: faint tissue sits just above
    m*(16), glass just below it."""
    import cv2

    rng = np.random.default_rng(seed)
    blobs = rng.random((4, 6, 6)).astype(np.float32)
    gt = np.argmax([cv2.resize(b, (96, 96)) for b in blobs], axis=0).astype(np.uint8)
    faint = (background_cutoff(8.0) + background_cutoff(16.0)) / 2
    glass = (background_cutoff(16.0) + background_cutoff(32.0)) / 2
    cams = np.full((3, *gt.shape), 0.01, np.float32)
    for c in range(3):
        cams[c][gt == c] = faint
    cams[0][gt == BACKGROUND] = glass
    return TuneSample(cams=cams, gt=gt, name=f"s{seed}")


def test_grid_search_finds_the_known_exponent(tmp_path):
    samples = [sample(1), sample(2)]
    base = PostprocParams(white_method="none", min_area_pct=0.0, min_region=0)
    grid = {"min_region": [0, 20], "bg_exponent": [2.0, 8.0, 16.0, 32.0, 64.0]}
    gen = grid_search(samples, grid, base=base)
    ticks = []
    try:
        while True:
            ticks.append(next(gen))
    except StopIteration as stop:
        result = stop.value
    assert len(ticks) == 7 and ticks[-1].done == ticks[-1].total == 7
    assert result.varied[0] == "bg_exponent"  # the exponent first, as in the method
    assert result.best.bg_exponent == 16.0
    assert result.report["miou"] == pytest.approx(1.0)
    assert len(result.rows) == 6 and "tumor" in result.rows[0]  # (16, 0) is not redone
    assert "bg_exponent" in result.table().splitlines()[0]
    for name in ("best.yaml", "best.json"):
        path = result.save(tmp_path / name)
        assert PostprocParams.from_file(path) == result.best


def test_grid_errors():
    with pytest.raises(WsssError, match="unknown"):
        run_to_end(grid_search([sample(1)], {"nope": [1]}))
    with pytest.raises(WsssError, match="at least one"):
        run_to_end(grid_search([], default_grid()))
    bad = sample(1)
    bad.gt = bad.gt[:10]
    with pytest.raises(WsssError, match="does not match"):
        run_to_end(grid_search([bad], {"bg_exponent": [1.0]}))
