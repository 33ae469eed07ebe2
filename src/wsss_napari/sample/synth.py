"""Procedural H&E-like lung tissue with exact ground truth, at any size.

Why: tests, the demo, the benchmarks and the default CAM model need tissue whose classes are
known pixel by pixel and *learnable* from patch-level labels, without shipping real slides.

How it stays fast and bounded in memory at 40,000 x 40,000 px:

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
from ..classes import BACKGROUND, CLASS_NAMES, NORMAL, STROMA, TUMOR

#: Edge (px) of the periodic class textures at level 0.
TEXTURE = 512
#: Level-0 pixels per cell of the coarse class field (sets the size of tissue regions).
CELL = 64
#: Level-0 pixels per pixel of the class map before nearest-neighbour upsampling.
MAP_STEP = 4
#: A class is in a patch's label when it covers at least this fraction of the patch.
LABEL_MIN_FRACTION = 0.02


# ----------------------------------------------------------------------------------- noise


def _spectral_noise(rng: np.random.Generator, n: int, sigma: float | tuple[float, float],
                    angle: float = 0.0, band: float | None = None) -> np.ndarray:
    """Periodic ``n x n`` float32 noise, Gaussian-filtered in Fourier space, unit std.

    ``sigma`` is the blur in px (a pair for an anisotropic blur along/across ``angle``);
    ``band`` (px) subtracts a wider blur, making band-pass noise with regular blob sizes.
    """
    from scipy import fft

    white = rng.standard_normal((n, n), dtype=np.float32)
    spec = fft.rfft2(white, workers=1)
    ky = fft.fftfreq(n).astype(np.float32)[:, None]
    kx = fft.rfftfreq(n).astype(np.float32)[None, :]
    if isinstance(sigma, tuple):
        c, s = math.cos(angle), math.sin(angle)
        ka = kx * c + ky * s  # along the fibres
        kc = -kx * s + ky * c
        filt = np.exp(-2 * math.pi**2 * (sigma[0] ** 2 * ka**2 + sigma[1] ** 2 * kc**2))
    else:
        k2 = kx**2 + ky**2
        filt = np.exp(-2 * math.pi**2 * sigma**2 * k2)
        if band is not None:
            filt = filt - np.exp(-2 * math.pi**2 * band**2 * k2)
    out = fft.irfft2(spec * filt.astype(np.float32), s=(n, n), workers=1)
    out -= out.mean()
    out /= out.std() + 1e-8
    return out.astype(np.float32, copy=False)


def _noise(rng: np.random.Generator, n: int, sigma: float, band: float | None = None) -> np.ndarray:
    """Like :func:`_spectral_noise` but computed at a lower resolution for smooth fields."""
    import cv2

    r = 1
    while sigma / (2 * r) >= 2 and n // (2 * r) >= 64:
        r *= 2
    low = _spectral_noise(rng, n // r, sigma / r, band=None if band is None else band / r)
    if r == 1:
        return low
    pad = np.pad(low, 1, mode="wrap")
    big = cv2.resize(pad, None, fx=r, fy=r, interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(big[r:-r, r:-r])


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _mix(base: np.ndarray, color, alpha: np.ndarray) -> np.ndarray:
    """Blend ``color`` (RGB or (H,W,3)) over ``base`` (H,W,3) with per-pixel ``alpha``."""
    out = np.array(base, np.float32)  # a fresh float32 copy, updated in place below
    diff = np.asarray(color, np.float32) - out
    diff *= alpha[..., None]
    out += diff
    return out


def _shade(rgb, n: np.ndarray, amount: float) -> np.ndarray:
    """A colour whose intensity varies with the field ``n`` (H,W) -> (H,W,3)."""
    return np.asarray(rgb, np.float32) * (1 + amount * n[..., None])


# -------------------------------------------------------------------------------- textures


def _tumor_texture(rng: np.random.Generator, n: int) -> np.ndarray:
    glands = _noise(rng, n, 10, band=22)  # acinar structures
    cells = _spectral_noise(rng, n, 3.0, band=5.5)  # nucleus-sized blobs
    chroma = _spectral_noise(rng, n, 0.8)
    mid = _noise(rng, n, 12)
    cyto = _shade((196, 128, 188), mid, 0.05)
    img = cyto
    rim = _smoothstep((glands + 0.2) / 0.5) * (1 - _smoothstep((glands - 0.9) / 0.3))
    thresh = 0.85 - 0.75 * rim  # crowded nuclei along the gland walls, dense elsewhere too
    nuc = _smoothstep((cells - thresh) / 0.35)
    img = _mix(img, _shade((78, 38, 122), chroma, 0.18), nuc)
    lumen = _smoothstep((glands - 1.15) / 0.25)
    img = _mix(img, _shade((242, 226, 240), mid, 0.02), lumen)
    return img, lumen


def _stroma_texture(rng: np.random.Generator, n: int) -> np.ndarray:
    angle = float(rng.uniform(0, math.pi))
    k = n / 10.0  # fibre period ~10 px
    kx, ky = round(k * math.cos(angle)), round(k * math.sin(angle))
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    warp = _noise(rng, n, 48)
    phase = 2 * math.pi * (kx * xx + ky * yy) / n + 5.0 * warp
    fibre = 0.5 + 0.5 * np.sin(phase)
    density = _noise(rng, n, 20)
    mid = _noise(rng, n, 6)
    strength = _smoothstep(0.6 + 0.35 * density)
    dark = _shade((222, 112, 168), mid, 0.04)
    pale = np.asarray((244, 192, 218), np.float32)
    img = _mix(np.broadcast_to(pale, (n, n, 3)).astype(np.float32), dark, fibre * strength)
    elong = _spectral_noise(rng, n, (7.0, 1.6), angle=math.atan2(ky, kx) + math.pi / 2)
    nuc = _smoothstep((elong - 2.4) / 0.4)
    img = _mix(img, (92, 48, 132), nuc)
    return img


def _normal_texture(rng: np.random.Generator, n: int) -> np.ndarray:
    alv = _noise(rng, n, 14, band=40)  # alveoli ~ 100 px
    gy = (np.roll(alv, -1, 0) - np.roll(alv, 1, 0)) * 0.5
    gx = (np.roll(alv, -1, 1) - np.roll(alv, 1, 1)) * 0.5
    dist = np.abs(alv) / (np.sqrt(gx * gx + gy * gy) + 1e-3)  # px to the nearest septum
    thick = 2.2 + 1.2 * _noise(rng, n, 30)
    septa = 1 - _smoothstep((dist - thick) / 1.5)
    mid = _noise(rng, n, 5)
    air = _shade((246, 238, 244), mid, 0.01)
    img = _mix(air, _shade((226, 142, 186), mid, 0.05), septa)
    small = _spectral_noise(rng, n, 1.6, band=3.0)
    nuc = _smoothstep((small - 2.3) / 0.4) * (septa > 0.3)
    img = _mix(img, (96, 54, 140), nuc)
    return img, 1 - septa


def _glass_texture(rng: np.random.Generator, n: int) -> np.ndarray:
    fine = _spectral_noise(rng, n, 0.8)
    slow = _noise(rng, n, 40)
    grey = 243 + 2.0 * fine + 2.5 * slow
    tint = np.asarray((1.0, 0.995, 1.0), np.float32)
    return np.clip(grey[..., None] * tint, 235, 250)


@functools.lru_cache(maxsize=4)
def _texture_set(seed: int, n: int = TEXTURE) -> tuple[tuple[np.ndarray, ...], dict]:
    """The four periodic class textures of ``seed`` and the opacity of their white parts.

    Returns:
        ``(textures, whites)``: uint8 (n, n, 3) per class (index = class), and
        ``{class: float32 (n, n)}`` -- how much of each pixel is white space (alveolar air
        in normal lung, gland lumens in tumor), the ``alpha`` its colour was mixed with.
    """
    rng = np.random.default_rng([seed, 0x5EED])
    stain = rng.uniform(0.96, 1.04, size=3).astype(np.float32)  # per-slide stain variation
    makers = {TUMOR: _tumor_texture, STROMA: _stroma_texture, NORMAL: _normal_texture}
    out, whites = [], {}
    for cls in (TUMOR, STROMA, NORMAL, BACKGROUND):
        if cls == BACKGROUND:
            tex = _glass_texture(rng, n)
        else:
            tex = makers[cls](rng, n)
            if isinstance(tex, tuple):
                tex, whites[cls] = tex
            tex = tex * stain
        out.append(np.clip(tex + 0.5, 0, 255).astype(np.uint8))
    return tuple(out), whites


def _textures(seed: int, n: int = TEXTURE) -> tuple[np.ndarray, ...]:
    """The four periodic class textures (uint8 (n, n, 3), index = class) of ``seed``."""
    return _texture_set(seed, n)[0]


@functools.lru_cache(maxsize=32)
def _white_bits(seed: int, ds: int) -> np.ndarray:
    """Per level pixel, bit ``c`` set where class ``c``'s texture is mostly white space.

    WSSS4LUAD labels white pixels inside tissue (air spaces, lumens) as background, so the
    true mask does too. Taken from the same area-averaged opacity as the level's colours
    (:func:`_level_textures`), so every pyramid level agrees with what it shows.
    """
    import cv2

    whites = _texture_set(seed)[1]
    size = max(TEXTURE // ds, 1)
    bits = np.zeros((size, size), np.uint8)
    for cls, alpha in whites.items():
        if ds > 1:
            alpha = cv2.resize(alpha, (size, size), interpolation=cv2.INTER_AREA)
        bits |= (alpha > 0.5).astype(np.uint8) << cls
    return bits


def _white_to_background(seed: int, ds: int, labels: np.ndarray, y0: int, x0: int) -> None:
    """Relabel, in place, the white space of tissue classes in ``labels`` as background."""
    bits = _white_bits(seed, ds)
    n = bits.shape[0]
    h, w = labels.shape
    for oy, ty, sh in _segments(y0, h, n):
        for ox, tx, sw in _segments(x0, w, n):
            lab = labels[oy : oy + sh, ox : ox + sw]
            white = (bits[ty : ty + sh, tx : tx + sw] >> lab) & 1
            np.putmask(lab, white.view(bool), BACKGROUND)


@functools.lru_cache(maxsize=32)
def _level_textures(seed: int, ds: int) -> tuple[np.ndarray, ...]:
    """Class textures as seen at downsample ``ds`` (a power of two), still periodic."""
    import cv2

    if ds == 1:
        return _textures(seed)
    size = max(TEXTURE // ds, 1)
    return tuple(cv2.resize(t, (size, size), interpolation=cv2.INTER_AREA) for t in _textures(seed))


@functools.lru_cache(maxsize=4)
def _perturbation(seed: int) -> np.ndarray:
    """Periodic noise added to the class scores so region borders are ragged, not smooth."""
    rng = np.random.default_rng([seed, 0xB0DE])
    n = TEXTURE // MAP_STEP
    return (0.35 * _spectral_noise(rng, n, 2.0) + 0.25 * _spectral_noise(rng, n, 0.7)).astype(
        np.float32
    )


@functools.lru_cache(maxsize=8)
def _coarse_scores(seed: int, gh: int, gw: int) -> np.ndarray:
    """Smooth random class scores (4, gh, gw) on the ``CELL``-px grid."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng([seed, 0xC1A55])
    raw = rng.standard_normal((4, gh, gw)).astype(np.float32)
    sm = np.stack([gaussian_filter(r, 2.2, mode="reflect") for r in raw])
    sm /= sm.std(axis=(1, 2), keepdims=True) + 1e-8
    sm[BACKGROUND] -= 0.25  # a little less glass than tissue, as on a real slide
    return sm


def _interp_matrix(coords: np.ndarray, n: int) -> np.ndarray:
    """Dense linear-interpolation matrix sampling a length-``n`` signal at ``coords``."""
    c = np.clip(coords, 0, n - 1)
    i0 = np.floor(c).astype(np.int64)
    i1 = np.minimum(i0 + 1, n - 1)
    f = (c - i0).astype(np.float32)
    m = np.zeros((len(c), n), np.float32)
    rows = np.arange(len(c))
    np.add.at(m, (rows, i0), 1 - f)
    np.add.at(m, (rows, i1), f)
    return m


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


def _segments(start: int, length: int, period: int) -> list[tuple[int, int, int]]:
    """Split ``[start, start+length)`` into runs that do not wrap: (out0, tex0, size)."""
    out, pos = [], 0
    while pos < length:
        t0 = (start + pos) % period
        size = min(period - t0, length - pos)
        out.append((pos, t0, size))
        pos += size
    return out


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

    Masks are palette PNGs (WSSS4LUAD colours, values 0..3) with the same file names.

    Returns:
        ``out_dir``.
    """
    from PIL import Image

    from ..classes import palette_flat
    from ..io.atomic import atomic_path, check_writable_dir

    out = check_writable_dir(out_dir)
    masks = check_writable_dir(out / "masks")
    for i, (rgb, mask, labels) in enumerate(make_patches(n, size=size, seed=seed)):
        name = patch_name(f"{seed}-{i}", labels)
        with atomic_path(out / name) as tmp:
            Image.fromarray(rgb).save(tmp, format="PNG")
        pal = Image.fromarray(mask, mode="P")
        pal.putpalette(palette_flat())
        with atomic_path(masks / name) as tmp:
            pal.save(tmp, format="PNG")
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
