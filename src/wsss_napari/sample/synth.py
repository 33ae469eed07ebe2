"""Procedural H&E-like lung tissue with exact ground truth, at any size.

Why: tests, the demo, the benchmarks and the default CAM model need tissue whose classes are
known pixel by pixel and *learnable* from patch-level labels, without shipping real slides.

How it stays fast and bounded in memory at 40,000 x 40,000 px (textures and class fields:
:mod:`._textures`):

* each class has a periodic texture (``TEXTURE`` px square, generated once per seed by
  FFT-filtered noise), so any pixel's colour is a wrap-around lookup;
* the class of each pixel comes from four smooth random fields on a coarse grid (one value
  per ``CELL`` px) interpolated exactly for any region and argmax-ed, with a small periodic
  perturbation that roughens the boundaries;
* so any region of any pyramid level can be rendered independently (:func:`render_region`),
  and the pyramidal TIFF writer streams tiles without holding an image in memory.

Classes follow WSSS4LUAD: 0 tumor, 1 stroma, 2 normal, 3 background (glass).
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .. import WsssError
from ..classes import CLASS_NAMES
from ._textures import (  # noqa: F401 - TEXTURE and CELL are part of this module's API
    CELL,
    MAP_STEP,
    TEXTURE,
    _coarse_scores,
    _interp_matrix,
    _level_textures,
    _perturbation,
    _segments,
    _white_to_background,
)

#: A class is in a patch's label when it covers at least this fraction of the patch.
LABEL_MIN_FRACTION = 0.02



# ---------------------------------------------------------------------------------- render


def _class_map(seed: int, height: int, width: int, ds: int, y0: int, x0: int, h: int,
               w: int) -> tuple[np.ndarray, np.ndarray]:
    """Class labels (h, w) of a region of the level with downsample ``ds``, and the classes
    that may be present (a superset: found at the class map's own, coarser resolution)."""
    import cv2

    gh, gw = math.ceil(height / CELL) + 1, math.ceil(width / CELL) + 1
    scores = _coarse_scores(seed, gh, gw)
    m = max(1, MAP_STEP // ds)  # level px per class-map px
    my0, mx0 = y0 // m, x0 // m
    mh, mw = (y0 + h - 1) // m - my0 + 1, (x0 + w - 1) // m - mx0 + 1
    step0 = m * ds  # level-0 px per class-map px
    ys = ((my0 + np.arange(mh)) + 0.5) * step0  # level-0 coordinates of map pixel centres
    xs = ((mx0 + np.arange(mw)) + 0.5) * step0
    # keep only the coarse rows/cols that matter, then interpolate exactly
    cy, cx = ys / CELL - 0.5, xs / CELL - 0.5
    r0, r1 = max(int(cy.min()) - 1, 0), min(int(cy.max()) + 2, gh - 1)
    c0, c1 = max(int(cx.min()) - 1, 0), min(int(cx.max()) + 2, gw - 1)
    ry = _interp_matrix(cy - r0, r1 - r0 + 1)
    rx = _interp_matrix(cx - c0, c1 - c0 + 1)
    sub = scores[:, r0 : r1 + 1, c0 : c1 + 1]
    fields = (ry[None] @ sub) @ rx.T[None]
    pert = _perturbation(seed)
    pn = pert.shape[0]
    py = (ys // MAP_STEP).astype(np.int64) % pn
    px = (xs // MAP_STEP).astype(np.int64) % pn
    fields += pert[np.ix_(py, px)][None]
    labels = np.zeros((mh, mw), np.uint8)
    best = fields[0]
    for k in range(1, 4):
        better = fields[k] > best
        labels[better] = k
        best = np.maximum(best, fields[k])
    present = np.flatnonzero(np.bincount(labels.ravel(), minlength=4))
    if m > 1:
        labels = cv2.resize(labels, (mw * m, mh * m), interpolation=cv2.INTER_NEAREST)
    oy, ox = y0 - my0 * m, x0 - mx0 * m
    return np.ascontiguousarray(labels[oy : oy + h, ox : ox + w]), present


def render_region(seed: int, height: int, width: int, y0: int, x0: int, h: int, w: int,
                  ds: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Render a region of the synthetic slide ``(height, width, seed)``.

    Args:
        seed: slide seed.
        height, width: level-0 size of the whole slide.
        y0, x0, h, w: the region, in pixels of the level with downsample ``ds``.
        ds: pyramid downsample (a power of two); levels are rendered directly, not resized.

    Returns:
        ``(rgb uint8 (h, w, 3), mask uint8 (h, w))``; the same pixels whichever tiling asks.
        The mask follows the WSSS4LUAD convention: white space inside tissue (alveolar air,
        gland lumens) is background (3), like the glass.
    """
    rgb, tissue = _render(seed, height, width, y0, x0, h, w, ds)
    _white_to_background(seed, ds, tissue, y0, x0)
    return rgb, tissue


def _render(seed: int, height: int, width: int, y0: int, x0: int, h: int, w: int,
            ds: int) -> tuple[np.ndarray, np.ndarray]:
    """RGB of a region and its *tissue* classes (white space still counted as tissue)."""
    import cv2

    if ds < 1 or ds & (ds - 1):
        raise WsssError(f"downsample must be a power of two, not {ds}")
    labels, present = _class_map(seed, height, width, ds, y0, x0, h, w)
    texs = _packed_textures(seed, ds)
    n = texs[0].shape[0]
    packed = np.empty((h, w), np.uint32)
    for oy, ty, sh in _segments(y0, h, n):
        for ox, tx, sw in _segments(x0, w, n):
            dst = packed[oy : oy + sh, ox : ox + sw]
            lab = labels[oy : oy + sh, ox : ox + sw]
            # the first present class is copied whole, the others through their masks
            dst[...] = texs[present[0]][ty : ty + sh, tx : tx + sw]
            for cls in present[1:]:
                np.copyto(dst, texs[cls][ty : ty + sh, tx : tx + sw], where=lab == cls)
    rgb = cv2.cvtColor(packed.view(np.uint8).reshape(h, w, 4), cv2.COLOR_RGBA2RGB)
    return rgb, labels


@functools.lru_cache(maxsize=32)
def _packed_textures(seed: int, ds: int) -> tuple[np.ndarray, ...]:
    """Level textures as (n, n) uint32 (RGBA packed), so masked copies move whole pixels."""
    import cv2

    return tuple(
        cv2.cvtColor(t, cv2.COLOR_RGB2RGBA).view(np.uint32)[..., 0]
        for t in _level_textures(seed, ds)
    )


def mask_region(seed: int, height: int, width: int, y0: int, x0: int, h: int, w: int,
                ds: int = 1, white_as_background: bool = True) -> np.ndarray:
    """Only the true mask of a region (as :func:`render_region`, much cheaper).

    ``white_as_background=False`` gives the tissue classes instead (air spaces count as
    normal, lumens as tumor): what the patch-level labels are made from.
    """
    if ds < 1 or ds & (ds - 1):
        raise WsssError(f"downsample must be a power of two, not {ds}")
    labels = _class_map(seed, height, width, ds, y0, x0, h, w)[0]
    if white_as_background:
        _white_to_background(seed, ds, labels, y0, x0)
    return labels


def truth_under(seed: int, height: int, width: int, geometry: Any,
                shape: tuple[int, int]) -> np.ndarray:
    """The true labels of the synthetic slide ``(height, width, seed)`` at the level-0 centres
    of the pixels of a map of ``shape`` placed by ``geometry`` (a ``MaskGeometry``): what a
    map of that place should show. Pixels off the slide are 255.

    Computed from level-0 coordinates only (``y + (row + 0.5) * downsample``), so a test
    comparing an exported map with it checks the map's placement, not the writer's own
    convention.
    """
    rows = np.floor(geometry.y + (np.arange(shape[0]) + 0.5) * geometry.downsample).astype(int)
    cols = np.floor(geometry.x + (np.arange(shape[1]) + 0.5) * geometry.downsample).astype(int)
    out = np.full(tuple(shape), 255, np.uint8)
    iy = (rows >= 0) & (rows < height)
    ix = (cols >= 0) & (cols < width)
    if not iy.any() or not ix.any():
        return out
    y0, y1 = int(rows[iy].min()), int(rows[iy].max()) + 1
    x0, x1 = int(cols[ix].min()), int(cols[ix].max()) + 1
    full = mask_region(seed, height, width, y0, x0, y1 - y0, x1 - x0)
    out[np.ix_(iy, ix)] = full[np.ix_(rows[iy] - y0, cols[ix] - x0)]
    return out


def make_tissue(height: int, width: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """An H&E-like image with tumor, stroma, normal and glass regions, and its true mask.

    Args:
        height, width: size in px (about 0.5 um per px: nuclei ~10 px, regions ~300-800 px).
        seed: makes the output reproducible; different seeds give different slides.

    Returns:
        ``(rgb uint8 (H, W, 3), mask uint8 (H, W))`` with mask values 0 tumor, 1 stroma,
        2 normal, 3 background (glass and, as in WSSS4LUAD, white space inside tissue).
    """
    if height < 1 or width < 1:
        raise WsssError(f"image size must be positive, got {height} x {width}")
    return render_region(seed, height, width, 0, 0, height, width)


def labels_of(mask: np.ndarray, min_fraction: float = LABEL_MIN_FRACTION) -> np.ndarray:
    """Patch-level labels (tumor, stroma, normal) as 0/1: classes covering >= ``min_fraction``."""
    counts = np.bincount(mask.ravel(), minlength=4)[: len(CLASS_NAMES)]
    return (counts >= min_fraction * mask.size).astype(np.uint8)


def make_patches(n: int, size: int = 224,
                 seed: int = 0) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``n`` training patches with their true masks and patch-level labels.

    Patches are cut at random places (random flips / 90-degree turns) from several synthetic
    tissues with different stain and texture seeds; patches that are almost all glass are
    skipped, like the challenge's training set, which only holds tissue patches. Labels come
    from the tissue classes (a patch of alveoli is "normal" though most of its pixels are
    air, hence background in its mask), as a pathologist labels a patch.

    Returns:
        list of ``(rgb uint8 (size, size, 3), mask uint8 (size, size), labels uint8 (3,))``.
    """
    if n < 0 or size < 8:
        raise WsssError(f"need n >= 0 and size >= 8, got n={n}, size={size}")
    rng = np.random.default_rng([seed, 0x9A7C4])
    out: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    per_tissue = 24
    side = max(1024, 4 * size)
    tissue_seed = int(rng.integers(0, 2**31 - 1))
    while len(out) < n:
        tissue_seed += 1
        rgb, tissue = _render(tissue_seed, side, side, 0, 0, side, side, 1)
        mask = tissue.copy()
        _white_to_background(tissue_seed, 1, mask, 0, 0)
        taken = 0
        for _ in range(per_tissue * 3):
            if len(out) >= n or taken >= per_tissue:
                break
            y, x = (int(v) for v in rng.integers(0, side - size + 1, size=2))
            m = mask[y : y + size, x : x + size]
            labels = labels_of(tissue[y : y + size, x : x + size])
            if not labels.any():
                continue
            img = rgb[y : y + size, x : x + size]
            k = int(rng.integers(0, 4))
            img, m = np.rot90(img, k), np.rot90(m, k)
            if rng.integers(0, 2):
                img, m = img[:, ::-1], m[:, ::-1]
            out.append((np.ascontiguousarray(img), np.ascontiguousarray(m), labels))
            taken += 1
    return out


def patch_name(ident: str, labels: np.ndarray) -> str:
    """File name in the WSSS4LUAD layout: ``<id>-[tumor, stroma, normal].png``."""
    return f"{ident}-[{', '.join(str(int(v)) for v in labels)}].png"


def write_patch_dataset(out_dir: str | os.PathLike, n: int, size: int = 224, seed: int = 0) -> Path:
    """Write ``n`` patches as ``out_dir/<seed>-<i>-[t, s, n].png`` and masks in ``out_dir/masks``.

    Masks are palette PNGs (WSSS4LUAD colours, values 0..3) with the same file names, written by
    :func:`wsss_napari.io.masks.write_label_png` (each lies on its patch).

    Returns:
        ``out_dir``.
    """
    from PIL import Image

    from ..io.atomic import atomic_path, check_writable_dir
    from ..io.masks import write_label_png
    from ..region import MaskGeometry

    out = check_writable_dir(out_dir)
    masks = check_writable_dir(out / "masks")
    for i, (rgb, mask, labels) in enumerate(make_patches(n, size=size, seed=seed)):
        name = patch_name(f"{seed}-{i}", labels)
        with atomic_path(out / name) as tmp:
            Image.fromarray(rgb).save(tmp, format="PNG")
        write_label_png(mask, masks / name, MaskGeometry(slide=name))
    return out


def pyramid_downsamples(height: int, width: int, min_size: int = 512, step: int = 2) -> list[int]:
    """Downsamples 1, step, step^2, ... until the level fits in ``min_size`` px."""
    out = [1]
    while max(height, width) / out[-1] > min_size:
        out.append(out[-1] * step)
    return out


def _tiles(seed: int, height: int, width: int, ds: int, tile: int) -> Iterator[np.ndarray]:
    lh, lw = math.ceil(height / ds), math.ceil(width / ds)
    for y in range(0, lh, tile):
        for x in range(0, lw, tile):
            h, w = min(tile, lh - y), min(tile, lw - x)
            rgb, _ = render_region(seed, height, width, y, x, h, w, ds=ds)
            if (h, w) != (tile, tile):  # tifffile wants full tiles; pad with glass white
                full = np.full((tile, tile, 3), 245, np.uint8)
                full[:h, :w] = rgb
                rgb = full
            yield rgb


def write_pyramidal_tiff(path: str | os.PathLike, height: int, width: int, seed: int = 0,
                         tile: int = 512, mpp: float = 0.5, step: int = 2,
                         quality: int = 85) -> Path:
    """Write a tiled, JPEG-compressed pyramidal (sub-IFD) TIFF of a synthetic slide.

    Memory stays bounded (a few tiles) whatever the size: every tile of every level is rendered
    on its own. Resolution tags record ``mpp`` so readers get the scale.

    Args:
        path: output ``.tif`` path (written atomically).
        height, width: level-0 size in px (e.g. 40,000 x 40,000).
        seed: slide seed (same pixels as :func:`make_tissue` / :func:`render_region`).
        tile: tile edge in px (multiple of 16).
        mpp: micrometres per pixel at level 0, stored in the resolution tags.
        step: downsample between levels (2 or 4).
        quality: JPEG quality.

    Returns:
        ``path``.
    """
    import tifffile

    from ..io.atomic import atomic_path

    if height < 1 or width < 1 or tile % 16 or step not in (2, 4):
        raise WsssError(f"bad pyramid request: {height}x{width}, tile {tile}, step {step}")
    dss = pyramid_downsamples(height, width, min_size=tile, step=step)
    bigtiff = height * width * 3 * 1.34 > 2**31
    res_per_cm = 1e4 / mpp
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=bigtiff) as tif:
        for i, ds in enumerate(dss):
            lh, lw = math.ceil(height / ds), math.ceil(width / ds)
            kw = {"subifds": len(dss) - 1} if i == 0 else {"subfiletype": 1}
            tif.write(
                _tiles(seed, height, width, ds, tile),
                shape=(lh, lw, 3),
                dtype=np.uint8,
                tile=(tile, tile),
                photometric="rgb",
                compression="jpeg",
                compressionargs={"level": quality},
                resolution=(res_per_cm / ds, res_per_cm / ds),
                resolutionunit="CENTIMETER",
                description=f"wsss-napari synthetic slide seed={seed} mpp={mpp}" if i == 0
                else None,
                metadata=None,
                software="wsss-napari",
                **kw,
            )
    return Path(path)
