"""The synthetic tissue's raw material: FFT-filtered noise, one periodic texture per class
(``TEXTURE`` px square, made once per seed) and the coarse random class fields.

:mod:`wsss_napari.sample.synth` renders regions of a slide from these.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from ..classes import BACKGROUND, NORMAL, STROMA, TUMOR

#: Edge (px) of the periodic class textures at level 0.
TEXTURE = 512
#: Level-0 pixels per cell of the coarse class field (sets the size of tissue regions).
CELL = 64
#: Level-0 pixels per pixel of the class map before nearest-neighbour upsampling.
MAP_STEP = 4


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


def _segments(start: int, length: int, period: int) -> list[tuple[int, int, int]]:
    """Split ``[start, start+length)`` into runs that do not wrap: (out0, tex0, size)."""
    out, pos = [], 0
    while pos < length:
        t0 = (start + pos) % period
        size = min(period - t0, length - pos)
        out.append((pos, t0, size))
        pos += size
    return out
