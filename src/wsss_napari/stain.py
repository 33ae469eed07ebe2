"""Stain normalisation (colour transfer) of H&E: Reinhard and Macenko, vectorised numpy.

A :class:`StainEstimate` describes the stain of one image or one whole slide: the mean and
standard deviation of its tissue pixels in CIELAB (Reinhard) and its two stain vectors in
optical density with their 99th-percentile concentrations (Macenko). A :class:`Normalizer`
maps pixels from a *source* estimate to a *target* estimate:

* ``reinhard``: per-channel ``(x - mean_s) / std_s * std_t + mean_t`` in CIELAB;
* ``macenko``: optical density ``OD = -log((I + 1) / 256)``, stain concentrations
  ``C = pinv(HE_s) @ OD``, rescaled by ``maxC_t / maxC_s``, recomposed with ``HE_t``.

Tile-safe on whole slides: :func:`estimate_slide` makes ONE estimate per slide from the
tissue pixels of a low-magnification view, and every tile is mapped with it
(:class:`StainNormalizedSlide`), so neighbouring tiles get the same transform and no seams
appear (per-tile estimates, as some tools do, differ tile to tile). Blank or degenerate
tissue (too few stained pixels, one stain only, NaN, stains not H/E-like) raises
:class:`StainError` for a reference, and for a slide or a patch falls back to the reference
(an identity-like transform) with a :class:`~wsss_napari.WsssWarning`.

Estimation details (Macenko et al. 2009): pixels whose OD is above ``beta = 0.15`` in every
channel; the plane of the two largest eigenvectors of their OD covariance; the 1st and 99th
percentile angles in that plane are the two stains; haematoxylin is the one absorbing more
red. Reinhard statistics come from pixels darker than 80 % lightness (not glass).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import WsssError, WsssWarning

log = logging.getLogger(__name__)

METHODS = ("none", "reinhard", "macenko")
#: Optical-density threshold of a "stained" pixel (every channel above it).
OD_BETA = 0.15
#: Percentile of the extreme stain angles (Macenko's alpha).
ALPHA = 1.0
#: Fewest stained pixels for a usable estimate.
MIN_PIXELS = 500
#: Pixels sampled at most for an estimate (the eigen-decomposition is on a 3x3 covariance,
#: the percentiles are what costs).
MAX_SAMPLES = 200_000
#: Tissue for Reinhard's statistics: CIELAB lightness below this (0-100).
TISSUE_L = 80.0


class StainError(WsssError):
    """A stain estimate could not be made (blank, glass-only or degenerate tissue)."""


def _f3(v: Sequence[float]) -> tuple[float, float, float]:
    t = tuple(float(x) for x in v)
    if len(t) != 3:
        raise WsssError(f"stain estimate: expected 3 values, got {len(t)}")
    return t  # type: ignore[return-value]


@dataclass(frozen=True)
class StainEstimate:
    """The stain of one image or slide (see the module docstring); JSON round trip."""

    lab_mean: tuple[float, float, float]
    lab_std: tuple[float, float, float]
    stains: tuple[tuple[float, float, float], tuple[float, float, float]]  # H, E (unit OD)
    max_conc: tuple[float, float]
    n_pixels: int = 0
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: (json.loads(json.dumps(v)) if isinstance(v, tuple) else v)
                for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StainEstimate:
        try:
            est = cls(lab_mean=_f3(d["lab_mean"]), lab_std=_f3(d["lab_std"]),
                      stains=(_f3(d["stains"][0]), _f3(d["stains"][1])),
                      max_conc=(float(d["max_conc"][0]), float(d["max_conc"][1])),
                      n_pixels=int(d.get("n_pixels", 0)), source=str(d.get("source", "")))
        except (KeyError, IndexError, TypeError, ValueError) as err:
            raise WsssError(f"not a stain estimate record: {err}") from err
        _check(est, "stored stain estimate")
        return est

    @property
    def stain_matrix(self) -> np.ndarray:
        """``(3, 2)`` OD stain vectors as columns (H, E)."""
        return np.asarray(self.stains, dtype=np.float64).T


def _od(rgb: np.ndarray) -> np.ndarray:
    return -np.log((rgb.astype(np.float32) + 1.0) / 256.0)


def _lab(rgb: np.ndarray) -> np.ndarray:
    import cv2

    flat = np.ascontiguousarray(rgb.reshape(-1, 1, 3)).astype(np.float32) / 255.0
    return cv2.cvtColor(flat, cv2.COLOR_RGB2LAB).reshape(-1, 3)


def _rgb_from_lab(lab: np.ndarray) -> np.ndarray:
    import cv2

    rgb = cv2.cvtColor(np.ascontiguousarray(lab.reshape(-1, 1, 3), dtype=np.float32),
                       cv2.COLOR_LAB2RGB).reshape(-1, 3)
    return np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _pixels(rgb: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    arr = np.asarray(rgb)
    if arr.ndim != 3 or arr.shape[-1] < 3:
        raise WsssError(f"stain estimate needs an RGB image (H, W, 3), not shape {arr.shape}")
    px = arr[..., :3].reshape(-1, 3)
    if mask is not None:
        m = np.asarray(mask, dtype=bool)
        if m.shape != arr.shape[:2]:
            raise WsssError(f"tissue mask shape {m.shape} differs from the image's "
                            f"{arr.shape[:2]}")
        px = px[m.ravel()]
    if len(px) > MAX_SAMPLES:
        px = px[rng.choice(len(px), MAX_SAMPLES, replace=False)]
    return px.astype(np.uint8)


def _check(est: StainEstimate, what: str) -> None:
    he = est.stain_matrix
    vals = [*est.lab_mean, *est.lab_std, *he.ravel(), *est.max_conc]
    if not all(math.isfinite(v) for v in vals):
        raise StainError(f"{what}: the stain estimate is not finite (degenerate tissue)")
    if min(est.lab_std) < 0.5:
        raise StainError(f"{what}: no colour variation in the tissue (blank?)")
    if he.min() < -0.05:
        raise StainError(f"{what}: the stain vectors are not H&E-like (negative optical "
                         "density); is this H&E?")
    cos = float(np.clip(he[:, 0] @ he[:, 1], -1, 1))
    if math.degrees(math.acos(cos)) < 3.0:
        raise StainError(f"{what}: only one stain found (haematoxylin and eosin vectors "
                         f"{math.degrees(math.acos(cos)):.1f} degrees apart)")
    if min(est.max_conc) <= 1e-3:
        raise StainError(f"{what}: a stain is absent (max concentration "
                         f"{min(est.max_conc):.2g})")


def estimate(rgb: np.ndarray, mask: np.ndarray | None = None, source: str = "",
             min_pixels: int | None = None, seed: int = 0) -> StainEstimate:
    """Estimate the stain of an RGB uint8 image (optionally only where ``mask`` is True).

    ``min_pixels`` stained pixels are needed: default :data:`MIN_PIXELS`, or 5 % of a small
    image's pixels (at least 50).

    Raises:
        StainError: too few stained pixels (glass, blank), one stain only, or a result that
            is not finite / not H&E-like.
    """
    rng = np.random.default_rng(seed)
    px = _pixels(rgb, mask, rng)
    what = source or "image"
    if min_pixels is None:
        n_all = int(np.prod(np.asarray(rgb).shape[:2]))
        min_pixels = min(MIN_PIXELS, max(50, n_all // 20))
    lab = _lab(px) if len(px) else np.zeros((0, 3), np.float32)
    tissue = lab[:, 0] < TISSUE_L
    od = _od(px)
    stained = od[np.all(od > OD_BETA, axis=1)]
    n_ok = int(min(tissue.sum(), len(stained)))
    if n_ok < min_pixels:
        raise StainError(f"{what}: too little stained tissue ({n_ok} px, need {min_pixels}); "
                         "glass or a blank region?")
    t = lab[tissue].astype(np.float64)
    lab_mean, lab_std = t.mean(axis=0), t.std(axis=0)
    cov = np.cov(stained.astype(np.float64), rowvar=False)
    if not np.all(np.isfinite(cov)):
        raise StainError(f"{what}: degenerate optical densities")
    _, vecs = np.linalg.eigh(cov)
    plane = vecs[:, [2, 1]]  # the two largest eigenvectors
    plane = plane * np.where(plane.sum(axis=0) < 0, -1.0, 1.0)  # point into positive OD
    proj = stained @ plane
    phi = np.arctan2(proj[:, 1], proj[:, 0])
    lo, hi = np.percentile(phi, [ALPHA, 100 - ALPHA])
    v1 = plane @ np.array([math.cos(lo), math.sin(lo)])
    v2 = plane @ np.array([math.cos(hi), math.sin(hi)])
    h, e = (v1, v2) if v1[0] > v2[0] else (v2, v1)  # haematoxylin absorbs more red
    h, e = h / np.linalg.norm(h), e / np.linalg.norm(e)
    he = np.stack([h, e], axis=1)
    conc = np.linalg.lstsq(he, od.T.astype(np.float64), rcond=None)[0]
    max_conc = np.percentile(conc, 99, axis=1)
    est = StainEstimate(lab_mean=_f3(lab_mean), lab_std=_f3(lab_std),
                        stains=(_f3(h), _f3(e)), max_conc=(float(max_conc[0]),
                                                           float(max_conc[1])),
                        n_pixels=int(len(stained)), source=source)
    _check(est, what)
    return est


def estimate_many(images: Sequence[np.ndarray], source: str = "",
                  per_image: int = 20_000, seed: int = 0) -> StainEstimate:
    """One estimate from the pooled tissue pixels of several images (e.g. a training set)."""
    rng = np.random.default_rng(seed)
    pools = []
    for rgb in images:
        px = np.asarray(rgb)[..., :3].reshape(-1, 3)
        if len(px) > per_image:
            px = px[rng.choice(len(px), per_image, replace=False)]
        pools.append(px)
    if not pools:
        raise StainError(f"{source or 'images'}: no images to estimate a stain from")
    pooled = np.concatenate(pools)[None]
    return estimate(pooled, source=source, seed=seed)


class Normalizer:
    """Map pixels from a ``source`` stain estimate to a ``target`` one.

    Args:
        method: ``reinhard`` or ``macenko``.
        target: the stain to reproduce (a reference image's / the training set's).
        source: the stain of the image or slide being normalised; ``None`` = the target
            (identity-like: the fallback for degenerate tissue).
    """

    def __init__(self, method: str, target: StainEstimate,
                 source: StainEstimate | None = None) -> None:
        if method not in ("reinhard", "macenko"):
            raise WsssError(f"stain normalisation method must be reinhard or macenko, "
                            f"not {method!r}")
        self.method = method
        self.target = target
        self.source = source if source is not None else target
        self.fallback = source is None
        s, t = self.source, self.target
        self._pinv = np.linalg.pinv(s.stain_matrix).astype(np.float32)          # (2, 3)
        scale = np.asarray(t.max_conc) / np.maximum(np.asarray(s.max_conc), 1e-6)
        self._recompose = (t.stain_matrix * scale[None, :]).astype(np.float32)  # (3, 2)
        self._lab_a = (np.asarray(t.lab_std) / np.maximum(np.asarray(s.lab_std), 1e-6))
        self._lab_b = np.asarray(t.lab_mean) - np.asarray(s.lab_mean) * self._lab_a

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """Normalised copy of an RGB uint8 image ``(H, W, 3)`` (extra channels dropped)."""
        arr = np.asarray(rgb)
        if arr.ndim != 3 or arr.shape[-1] < 3:
            raise WsssError(f"stain normalisation needs RGB (H, W, 3), not {arr.shape}")
        h, w = arr.shape[:2]
        px = np.ascontiguousarray(arr[..., :3]).reshape(-1, 3)
        if self.method == "reinhard":
            lab = _lab(px) * self._lab_a.astype(np.float32) + self._lab_b.astype(np.float32)
            out = _rgb_from_lab(lab)
        else:
            conc = _od(px) @ self._pinv.T
            od = conc @ self._recompose.T
            out = np.clip(256.0 * np.exp(-od) - 1.0 + 0.5, 0, 255).astype(np.uint8)
        return out.reshape(h, w, 3)

    def to_dict(self) -> dict[str, Any]:
        """What a checkpoint stores: the method and the target (sources are per slide)."""
        return {"method": self.method, "target": self.target.to_dict()}


def target_from_dict(d: dict[str, Any] | None) -> tuple[str, StainEstimate] | None:
    """``(method, target)`` from a checkpoint's ``config.extra['stain']`` (None if absent)."""
    if not d or d.get("method", "none") == "none":
        return None
    if d.get("method") not in METHODS:
        raise WsssError(f"checkpoint stain method {d.get('method')!r} is unknown")
    return str(d["method"]), StainEstimate.from_dict(d["target"])


def estimate_or_fallback(rgb: np.ndarray, what: str, mask: np.ndarray | None = None
                         ) -> StainEstimate | None:
    """:func:`estimate`, or None with a warning when the tissue is blank / degenerate."""
    try:
        return estimate(rgb, mask, source=what)
    except StainError as err:
        warnings.warn(f"{err}; stain normalisation falls back to the reference (left as is)",
                      WsssWarning, stacklevel=2)
        return None


def normalizer_for_image(method: str, target: StainEstimate, rgb: np.ndarray,
                         what: str = "image") -> Normalizer:
    """A normaliser fitted to one image (a patch: the image is its own stain unit)."""
    return Normalizer(method, target, estimate_or_fallback(rgb, what))


# --- whole slides -----------------------------------------------------------------------


#: Longest side of the low-magnification view a slide's stain is estimated from.
SLIDE_ESTIMATE_SIZE = 2048


def estimate_slide(slide: Any, max_size: int = SLIDE_ESTIMATE_SIZE) -> StainEstimate | None:
    """ONE stain estimate for a whole slide from the tissue of its thumbnail (None, with a
    warning, when the slide has too little usable tissue)."""
    thumb = np.asarray(slide.thumbnail(max_size))
    return estimate_or_fallback(thumb, f"slide '{getattr(slide, 'name', '') or 'slide'}'")


class StainNormalizedSlide:
    """A slide whose ``read_region`` returns stain-normalised pixels (everything else is the
    wrapped slide's). One normaliser for the whole slide, so tiles do not seam."""

    def __init__(self, slide: Any, normalizer: Normalizer) -> None:
        self._slide = slide
        self.normalizer = normalizer

    def read_region(self, level: int, y: int, x: int, h: int, w: int) -> np.ndarray:
        return self.normalizer(np.asarray(self._slide.read_region(level, y, x, h, w)))

    def thumbnail(self, max_size: int = 1024) -> np.ndarray:
        return self.normalizer(np.asarray(self._slide.thumbnail(max_size)))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._slide, name)

    def __enter__(self) -> StainNormalizedSlide:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._slide.close()


def normalize_slide(slide: Any, method: str, target: StainEstimate) -> StainNormalizedSlide:
    """Wrap ``slide`` so every read is normalised to ``target`` with one slide estimate."""
    return StainNormalizedSlide(slide, Normalizer(method, target, estimate_slide(slide)))


def slide_for_model(slide: Any, model: Any) -> Any:
    """``slide`` normalised like the model's training data (its checkpoint's
    ``config.extra['stain']``), or ``slide`` itself for a model trained without."""
    spec = target_from_dict(getattr(getattr(model, "config", None), "extra", {}).get("stain"))
    if spec is None:
        return slide
    return normalize_slide(slide, *spec)


def image_for_model(rgb: np.ndarray, model: Any) -> np.ndarray:
    """An image (patch) normalised like the model's training data (itself if trained without)."""
    spec = target_from_dict(getattr(getattr(model, "config", None), "extra", {}).get("stain"))
    if spec is None:
        return rgb
    return normalizer_for_image(spec[0], spec[1], rgb)(rgb)


# --- reference stains -------------------------------------------------------------------


def load_reference(path: str | Path, region: Any = None) -> StainEstimate:
    """The target stain of a reference image or slide file (or a level-0 ``Region`` of it).

    Raises:
        StainError: the reference (region) is glass, blank or degenerate.
    """
    from .io.slide import Slide

    with Slide.open(path) as slide:
        if region is None:
            rgb = np.asarray(slide.thumbnail(SLIDE_ESTIMATE_SIZE))
            what = f"reference '{Path(path).name}'"
        else:
            r = region.clip(*slide.shape)
            rgb = np.asarray(slide.read_region(0, int(r.y), int(r.x), int(r.height),
                                               int(r.width)))
            what = f"reference region {r.describe()} of '{Path(path).name}'"
    return estimate(rgb, source=what)
