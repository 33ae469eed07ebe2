"""Per-cell labels: CAM x nucleus instances (the HPA single-cell recipe, for tissue classes).

Nuclei come from any instance label image (stardist, cellpose, a napari Labels layer) or from
the built-in segmentation: haematoxylin from colour deconvolution (scikit-image ``rgb2hed``),
Gaussian smoothing, a threshold (Otsu over the slide's tissue, computed ONCE per slide from
its thumbnail so tiles agree), small-object removal, and a distance-transform watershed that
splits touching nuclei. Each nucleus (optionally dilated by ``dilate`` px, without merging
into neighbours) gets the mean of every class's CAM over its pixels; its class is the
highest mean, its confidence that class's share of the means (1 / C = undecided, 1 = only
that class).

Whole slides go tile by tile (``tile`` px of level 0 with a ``halo`` of context): a nucleus
belongs to the tile whose core holds its centroid, so cells on tile borders are counted
exactly once, and one tile's pixels, labels and CAM window are in memory at a time. Rows
stream to ``cells.csv`` and features to ``cells.geojson`` (QuPath detections with their
classification), both written atomically.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import WsssError
from .cell_files import CSV_COLUMNS, CellWriter
from .params import CellParams
from .progress import Progress

__all__ = [  # CSV_COLUMNS (cell_files) stays importable from here
    "CSV_COLUMNS", "CellTable", "CellsResult", "cam_geometry", "check_instances",
    "classify_instances", "collect_cells", "haematoxylin", "iter_cells", "segment_nuclei",
    "slide_cells", "slide_threshold",
]



# --- nuclei -------------------------------------------------------------------------------


def haematoxylin(rgb: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """Smoothed haematoxylin optical density of an RGB uint8 image (colour deconvolution)."""
    from skimage.color import rgb2hed
    from skimage.filters import gaussian

    h = rgb2hed(np.asarray(rgb)[..., :3])[..., 0]
    return gaussian(h, sigma=sigma, preserve_range=True) if sigma > 0 else h


def slide_threshold(rgb: np.ndarray, glass_grey: float = 220.0) -> float:
    """Otsu threshold of the haematoxylin of the tissue (grey < ``glass_grey``) of an image:
    computed once per slide, from its thumbnail.

    Raises:
        WsssError: no tissue or no contrast to threshold.
    """
    from skimage.filters import threshold_otsu

    rgb = np.asarray(rgb)[..., :3]
    h = haematoxylin(rgb, sigma=0)
    tissue = h[rgb.mean(axis=-1) < glass_grey]
    if tissue.size < 100 or float(np.ptp(tissue)) < 1e-3:
        raise WsssError("no tissue to find nuclei in (the image is glass or blank); "
                        "give --nucleus-threshold explicitly")
    return float(threshold_otsu(tissue))


def segment_nuclei(rgb: np.ndarray, threshold: float, params: CellParams | None = None
                   ) -> np.ndarray:
    """Nucleus instances ``int32 (H, W)`` (0 = none) of an RGB uint8 image."""
    from scipy import ndimage as ndi
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    p = params or CellParams()
    mask = haematoxylin(rgb, p.sigma) > threshold
    mask = ndi.binary_opening(mask, iterations=1)
    mask = ndi.binary_fill_holes(mask)
    blobs, _ = ndi.label(mask)
    small = np.bincount(blobs.ravel()) < p.min_area
    small[0] = True
    mask = ~small[blobs]
    blobs[~mask] = 0
    if not mask.any():
        return np.zeros(mask.shape, np.int32)
    dist = ndi.distance_transform_edt(mask)
    peaks = peak_local_max(dist, min_distance=p.min_distance, labels=blobs,
                           exclude_border=False)
    markers = np.zeros(mask.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    # blobs without a peak (flat plateaus) keep one marker of their own
    missing = np.setdiff1d(np.unique(blobs[mask]), np.unique(blobs[markers > 0]))
    for i, b in enumerate(missing, start=len(peaks) + 1):
        ys, xs = np.nonzero(blobs == b)
        markers[ys[len(ys) // 2], xs[len(xs) // 2]] = i
    labels = watershed(-dist, markers, mask=mask).astype(np.int32)
    sizes = np.bincount(labels.ravel())
    too = (sizes < p.min_area) | (sizes > p.max_area)
    too[0] = False
    labels[too[labels]] = 0
    return labels


# --- per-cell classes ---------------------------------------------------------------------


@dataclass
class CellTable:
    """Cells of one tile (or image): level-0 centroids, areas, classes, mean CAMs, outlines."""

    centroid_y: np.ndarray
    centroid_x: np.ndarray
    area: np.ndarray
    mean_cam: np.ndarray          # (n, C)
    label: np.ndarray             # (n,) class index
    confidence: np.ndarray        # (n,)
    outlines: list[np.ndarray] = field(default_factory=list)  # (k, 2) x, y level-0 px

    def __len__(self) -> int:
        return len(self.area)


def classify_instances(instances: np.ndarray, cams: np.ndarray, offset: tuple[float, float],
                       cam_origin: tuple[float, float], cam_downsample: float,
                       dilate: int = 0, keep: Any = None, outlines: bool = True) -> CellTable:
    """Classes of the instances of a level-0 label image by the CAMs under them.

    Args:
        instances: ``int (H, W)`` labels at level 0 (0 = none) whose pixel (0, 0) is level-0
            pixel ``offset`` (y, x).
        cams: ``(C, h, w)`` maps in [0, 1]; CAM pixel ``(i, j)`` covers level-0
            ``cam_origin + cam_downsample * [i, i + 1)`` (and the same for columns).
        dilate: grow each nucleus by this many px (not into its neighbours) before averaging.
        keep: optional ``f(cy, cx) -> bool array`` choosing cells by level-0 centroid.
        outlines: also trace each nucleus outline (for GeoJSON).
    """
    from scipy import ndimage as ndi

    inst = np.asarray(instances)
    n_cls = cams.shape[0]
    ids = np.unique(inst)
    ids = ids[ids > 0]
    empty = CellTable(np.zeros(0), np.zeros(0), np.zeros(0, np.int64), np.zeros((0, n_cls)),
                      np.zeros(0, np.int64), np.zeros(0))
    if not len(ids):
        return empty
    oy, ox = offset
    area = ndi.sum_labels(np.ones_like(inst, np.int64), inst, ids).astype(np.int64)
    cy, cx = (np.asarray(v) for v in zip(*ndi.center_of_mass(np.ones_like(inst), inst, ids),
                                         strict=True))
    cy, cx = cy + oy + 0.5, cx + ox + 0.5  # pixel centres, level-0 coordinates
    chosen = np.ones(len(ids), bool) if keep is None else np.asarray(keep(cy, cx), bool)
    if not chosen.any():
        return empty
    ids, area, cy, cx = ids[chosen], area[chosen], cy[chosen], cx[chosen]
    region = inst
    if dilate > 0:
        from skimage.segmentation import expand_labels

        region = expand_labels(inst, distance=dilate)
    # CAM value under every pixel of the tile (nearest CAM pixel)
    ys = np.floor((np.arange(inst.shape[0]) + oy + 0.5 - cam_origin[0]) / cam_downsample)
    xs = np.floor((np.arange(inst.shape[1]) + ox + 0.5 - cam_origin[1]) / cam_downsample)
    yi = np.clip(ys.astype(np.int64), 0, cams.shape[1] - 1)
    xi = np.clip(xs.astype(np.int64), 0, cams.shape[2] - 1)
    mean = np.stack([ndi.mean(np.asarray(cams[c])[np.ix_(yi, xi)], region, ids)
                     for c in range(n_cls)], axis=1)
    mean = np.nan_to_num(mean, nan=0.0)
    best = np.argmax(mean, axis=1)
    total = mean.sum(axis=1)
    conf = np.where(total > 0, mean[np.arange(len(ids)), best] / np.maximum(total, 1e-12),
                    1.0 / n_cls)
    lines = _outlines(inst, ids, offset) if outlines else []
    return CellTable(cy, cx, area, mean, best, conf, lines)


def _outlines(inst: np.ndarray, ids: np.ndarray, offset: tuple[float, float]
              ) -> list[np.ndarray]:
    import cv2
    from scipy import ndimage as ndi

    out = []
    slices = ndi.find_objects(inst)
    for i in ids:
        sl = slices[i - 1]
        sub = (inst[sl] == i).astype(np.uint8)
        contours, _ = cv2.findContours(np.pad(sub, 1), cv2.RETR_EXTERNAL,
                                       cv2.CHAIN_APPROX_SIMPLE)
        c = max(contours, key=len)[:, 0, :].astype(np.float64) - 1.0  # (k, 2) x, y
        c[:, 0] += sl[1].start + offset[1]
        c[:, 1] += sl[0].start + offset[0]
        out.append(c)
    return out


# --- whole slides -------------------------------------------------------------------------


@dataclass
class CellsResult:
    """What :func:`slide_cells` wrote and counted."""

    csv_path: Path
    geojson_path: Path
    n_cells: int
    per_class: dict[str, int]
    threshold: float | None
    seconds: float


def _tiles(y0: int, x0: int, h: int, w: int, tile: int) -> Iterator[tuple[int, int, int, int]]:
    for ty in range(y0, y0 + h, tile):
        for tx in range(x0, x0 + w, tile):
            yield ty, tx, min(tile, y0 + h - ty), min(tile, x0 + w - tx)


def check_instances(instances: Any, slide_shape: tuple[int, int], region: Any) -> None:
    """Refuse an instance image of another shape than the slide region it labels."""
    shape = tuple(np.asarray(instances.shape[:2]))
    want = (int(round(region.height)), int(round(region.width)))
    full = tuple(int(v) for v in slide_shape)
    if shape != want and shape != full:
        raise WsssError(f"instance labels of shape {shape[0]} x {shape[1]} do not match the "
                        f"slide ({full[0]} x {full[1]} px at level 0) or the region "
                        f"({want[0]} x {want[1]}): bring them at level-0 resolution "
                        "(same shape and scale as the slide)")


def cam_geometry(cams: Any) -> tuple[float, float, float]:
    """``(downsample, y, x)`` of a CAM store: its ``geometry`` (``SlideCams``), or
    ``downsample`` / ``origin`` attributes (plain records)."""
    geo = getattr(cams, "geometry", None)
    if geo is not None:
        return float(geo.downsample), float(geo.y), float(geo.x)
    return float(cams.downsample), float(cams.origin[0]), float(cams.origin[1])


def iter_cells(slide: Any, cams: Any, params: CellParams | None = None, region: Any = None,
               instances: Any = None, sink: Any = None
               ) -> Generator[Progress, None, dict[str, Any]]:
    """The tile loop of :func:`slide_cells`: each tile's :class:`CellTable` goes to
    ``sink(table)``; returns ``{'names', 'mpp', 'threshold'}``.

    Raises:
        WsssError: CAMs of another slide, instance labels of another shape, glass only.
    """
    from .region import Region

    p = params or CellParams()
    h0, w0 = slide.shape
    ds, oy, ox = cam_geometry(cams)
    ch, cw = cams.cams.shape[1:]
    if oy + (ch - 1) * ds >= h0 or ox + (cw - 1) * ds >= w0:
        raise WsssError(f"the CAMs cover level-0 px up to ({oy + ch * ds:g}, {ox + cw * ds:g}), "
                        f"beyond this slide ({h0} x {w0}): are they of another slide?")
    if region is None:
        region = Region(y=oy, x=ox, height=ch * ds, width=cw * ds)
    region = region.clip(h0, w0)
    y0, x0 = int(region.y), int(region.x)
    rh, rw = int(round(region.height)), int(round(region.width))
    inst_offset = (0, 0)
    if instances is not None:
        check_instances(instances, (h0, w0), region)
        if tuple(instances.shape[:2]) != (h0, w0):
            inst_offset = (y0, x0)
    threshold = None
    if instances is None:
        threshold = p.nucleus_threshold or slide_threshold(slide.thumbnail(2048))
    names = tuple(cams.class_names) or tuple(f"class{c}" for c in range(cams.cams.shape[0]))
    tiles = list(_tiles(y0, x0, rh, rw, p.tile))
    n_cells = 0
    yield Progress("cells", 0, len(tiles), {"cells": 0})
    for i, tile in enumerate(tiles):
        table = _tile_cells(slide, cams, tile, p, threshold, instances, inst_offset)
        if table is not None:
            n_cells += len(table)
            if sink is not None and len(table):
                sink(table)
        yield Progress("cells", i + 1, len(tiles), {"cells": n_cells})
    return {"names": names, "mpp": getattr(slide, "mpp", None), "threshold": threshold}


def _tile_cells(slide: Any, cams: Any, tile: tuple[int, int, int, int], p: CellParams,
                threshold: float | None, instances: Any, inst_offset: tuple[int, int]
                ) -> CellTable | None:
    """The cells whose centroid lies in one tile's core, from nuclei found (or given) in the
    tile plus its halo (so a nucleus on the border is whole) and the CAM window under it;
    ``None`` where the CAMs do not reach."""
    ty, tx, th, tw = tile
    h0, w0 = slide.shape
    ds, oy, ox = cam_geometry(cams)
    ch, cw = cams.cams.shape[1:]
    hy0, hx0 = max(ty - p.halo, 0), max(tx - p.halo, 0)
    hy1, hx1 = min(ty + th + p.halo, h0), min(tx + tw + p.halo, w0)
    if instances is not None:  # the halo stops where the given labels do (a region's)
        hy0, hx0 = max(hy0, inst_offset[0]), max(hx0, inst_offset[1])
        hy1 = min(hy1, inst_offset[0] + instances.shape[0])
        hx1 = min(hx1, inst_offset[1] + instances.shape[1])
        inst = np.asarray(instances[hy0 - inst_offset[0]:hy1 - inst_offset[0],
                                    hx0 - inst_offset[1]:hx1 - inst_offset[1]])
    else:
        rgb = np.asarray(slide.read_region(0, hy0, hx0, hy1 - hy0, hx1 - hx0))
        inst = segment_nuclei(rgb, threshold, p)
    # the CAM window under this halo'd tile only (bounded memory)
    cy0 = int(max(math.floor((hy0 - oy) / ds), 0))
    cx0 = int(max(math.floor((hx0 - ox) / ds), 0))
    cy1 = int(min(math.ceil((hy1 - oy) / ds) + 1, ch))
    cx1 = int(min(math.ceil((hx1 - ox) / ds) + 1, cw))
    if cy1 <= cy0 or cx1 <= cx0:
        return None
    window = np.asarray(cams.cams[:, cy0:cy1, cx0:cx1], dtype=np.float32)

    def keep(cy, cx):  # centroid in this tile's core
        return (cy >= ty) & (cy < ty + th) & (cx >= tx) & (cx < tx + tw)

    return classify_instances(inst, window, (hy0, hx0), (oy + cy0 * ds, ox + cx0 * ds), ds,
                              p.dilate, keep)


def collect_cells(slide: Any, cams: Any, params: CellParams | None = None, region: Any = None,
                  instances: Any = None) -> Generator[Progress, None, tuple[CellTable, tuple]]:
    """All cells of a (small) region in memory: ``(table, class_names)`` (napari uses it)."""
    tables: list[CellTable] = []
    info = yield from iter_cells(slide, cams, params, region, instances, tables.append)
    n_cls = cams.cams.shape[0]
    if not tables:
        return CellTable(np.zeros(0), np.zeros(0), np.zeros(0, np.int64),
                         np.zeros((0, n_cls)), np.zeros(0, np.int64), np.zeros(0)), info["names"]
    cat = CellTable(*(np.concatenate([getattr(t, f) for t in tables]) for f in (
        "centroid_y", "centroid_x", "area", "mean_cam", "label", "confidence")),
        outlines=[o for t in tables for o in t.outlines])
    return cat, info["names"]


def slide_cells(slide: Any, cams: Any, out_dir: str | Path, params: CellParams | None = None,
                region: Any = None, instances: Any = None
                ) -> Generator[Progress, None, CellsResult]:
    """Per-cell labels of a slide (or a level-0 ``Region``), tile by tile, to ``out_dir``.

    Args:
        slide: an ``io.slide.Slide`` (level 0 is read).
        cams: a ``SlideCams`` (``inference.slide_cam``; e.g. ``SlideCams.open(CAMS.zarr)``).
        out_dir: folder for ``cells.csv`` and ``cells.geojson``.
        params: :class:`~wsss_napari.params.CellParams`.
        region: level-0 region (default: the CAMs' extent).
        instances: optional level-0 instance labels (the slide's or the region's shape)
            instead of the built-in nucleus segmentation.

    Yields:
        ``Progress('cells', tiles_done, tiles_total, {'cells': n})`` per tile.
    """
    import time

    from .io.atomic import atomic_path, check_writable_dir

    out = check_writable_dir(out_dir)
    names = tuple(cams.class_names) or tuple(f"class{c}" for c in range(cams.cams.shape[0]))
    t_start = time.perf_counter()
    csv_path, gj_path = out / "cells.csv", out / "cells.geojson"
    with atomic_path(csv_path) as tmp_csv, atomic_path(gj_path) as tmp_gj, \
            open(tmp_csv, "w", newline="") as fc, open(tmp_gj, "w") as fg:
        files = CellWriter(fc, fg, names, getattr(slide, "mpp", None))
        info = yield from iter_cells(slide, cams, params, region, instances, files.add)
        files.close()
    return CellsResult(csv_path, gj_path, files.n, files.counts, info["threshold"],
                       time.perf_counter() - t_start)
