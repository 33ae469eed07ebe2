"""Tissue report: areas from the mask geometry, tumor-stroma ratio and its 50 % flag."""

from __future__ import annotations

import numpy as np
import pytest

from wsss_napari.region import MaskGeometry
from wsss_napari.report import tissue_report


def _mask(tumor: int, stroma: int, normal: int, background: int) -> np.ndarray:
    return np.repeat(np.arange(4, dtype=np.uint8), [tumor, stroma, normal, background])[None]


def test_areas_and_ratio_from_known_pixels():
    geo = MaskGeometry(y=0, x=0, downsample=8.0, mpp=0.5)  # a mask px = 4 x 4 um = 16 um²
    rep = tissue_report(_mask(300, 100, 50, 1000), geo, model_hash="m", params_hash="p")
    assert rep.area_unit == "mm2"
    assert rep.area_mm2 == pytest.approx({"tumor": 300 * 16e-6, "stroma": 100 * 16e-6,
                                          "normal": 50 * 16e-6})
    assert rep.area_px == {"tumor": 300 * 64.0, "stroma": 100 * 64.0, "normal": 50 * 64.0}
    assert rep.tumor_stroma_ratio == pytest.approx(0.25) and rep.stroma_high is False
    row = rep.row()
    assert row["tumor_mm2"] == 0.0048 and row["model_hash"] == "m" and row["params_hash"] == "p"


@pytest.mark.parametrize(("tumor", "stroma", "ratio", "high"),
                         [(50, 50, 0.5, False), (49, 51, 0.51, True), (0, 0, None, None),
                          (0, 7, 1.0, True)])
def test_stroma_high_is_strictly_above_half(tumor, stroma, ratio, high):
    rep = tissue_report(_mask(tumor, stroma, 3, 3), MaskGeometry(downsample=1.0, mpp=1.0))
    assert rep.tumor_stroma_ratio == (None if ratio is None else pytest.approx(ratio))
    assert rep.stroma_high is high


def test_without_mpp_areas_are_level0_pixels():
    rep = tissue_report(_mask(10, 30, 0, 5), MaskGeometry(downsample=4.0, mpp=None))
    assert rep.area_unit == "px" and rep.area_mm2 == {"tumor": None, "stroma": None,
                                                       "normal": None}
    assert rep.area_px["stroma"] == 30 * 16.0
    assert rep.row()["stroma_mm2"] == "" and rep.tumor_stroma_ratio == pytest.approx(0.75)
