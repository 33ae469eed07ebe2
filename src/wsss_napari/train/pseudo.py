"""Pseudo-masks for the training patches: the bridge from stage 1 (CAMs) to stage 2.

Each patch gets multi-scale CAMs and the post-processing chain, with the patch's *own*
labels as ``present``: a class the patch is not labelled with can never appear in its mask,
which removes most CAM confusions for free. A segmentation model can relabel the same
patches the same way (self-training: :func:`seg_pseudo_mask`). Masks are palette PNGs (the
challenge palette, values 0..3) with the patch's file name, so ``train-seg DATA_DIR MASK_DIR``
pairs them by name.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Sequence
from pathlib import Path

import numpy as np

from .. import WsssError
from ..models.config import model_kind
from ..params import CamParams, PostprocParams, RunRecord
from ..progress import Progress
from ..region import MaskGeometry
from .data import PatchItem, load_rgb, resolve_bad, scan_patches

log = logging.getLogger(__name__)


def save_mask_png(mask: np.ndarray, path: str | Path, geometry: MaskGeometry | None = None
                  ) -> Path:
    """Write a label mask as a palette PNG (challenge colours) carrying its geometry, atomically.

    A patch's mask lies on the patch: ``MaskGeometry(slide=<patch file name>)`` by default.
    """
    from ..io.masks import write_label_png

    return write_label_png(mask, path, geometry or MaskGeometry(slide=Path(path).name))


def pseudo_mask(model, rgb: np.ndarray, labels: np.ndarray, cam_params: CamParams,
                post_params: PostprocParams, device=None, ignore_margin: float = 0.0,
                exact_single: bool = False, prior: np.ndarray | None = None,
                prior_weight: float = 1.0) -> np.ndarray:
    """The pseudo-mask of one labelled patch (uint8 (H, W), values 0..3, 255 = uncertain).

    ``ignore_margin``: a tissue pixel whose CAM for its class beats the best other class
    of the patch by less than this is marked 255 (ignored by stage 2), so the segmentation
    network learns from confident pixels only. Single-label patches have no other class:
    their tissue pixels are certain whatever the CAMs say.

    ``exact_single``: a single-label patch's mask is made without the model
    (:func:`single_label_mask`), so weak CAMs on its tissue cannot turn into background.

    ``prior``: a (C, H, W) per-class prior of the patch (:mod:`wsss_napari.epithelium`);
    the foreground of a patch with two or more labels is relabelled among them by
    CAM x prior^``prior_weight`` (:func:`~wsss_napari.epithelium.fuse_prior`).

    A segmentation model (``config.kind == 'seg'``: self-training, stage 2 relabelling its
    own training patches) gives each pixel its most probable class among the patch's labels
    and background (:func:`seg_pseudo_mask`); ``post_params`` and ``ignore_margin`` are
    for CAMs and do not apply to it.
    """
    from ..inference.multiscale import multiscale_cam
    from ..postproc import postprocess

    present = np.asarray(labels, dtype=bool)
    if exact_single and present.sum() == 1:
        return single_label_mask(rgb, int(np.flatnonzero(present)[0]), post_params)
    if model_kind(model) == "seg":
        return seg_pseudo_mask(model, rgb, present, cam_params, device=device)
    res = multiscale_cam(model, rgb, cam_params, device=device)
    mask = postprocess(res.cams, post_params, image=rgb, scores=res.scores, present=present)
    cams = res.cams
    if prior is not None:
        from ..epithelium import fuse_prior

        mask = fuse_prior(mask, cams, prior, present, prior_weight)
        cams = cams * np.clip(prior, 1e-3, 1.0) ** prior_weight  # margins on the fused scores
    if ignore_margin > 0:
        mask = mark_uncertain(mask, cams, present, ignore_margin)
    return mask


def seg_pseudo_mask(model, rgb: np.ndarray, present: np.ndarray, cam_params: CamParams,
                    device=None) -> np.ndarray:
    """A segmentation model's mask of a labelled patch: each pixel's most probable class
    among the ``present`` ones and background (the windows of :func:`seg_probabilities`)."""
    from ..classes import BACKGROUND
    from ..inference.predict import seg_probabilities

    prob = seg_probabilities(model, rgb, cam_params, device)
    n_fg = prob.shape[0] - 1
    if len(present) != n_fg:
        raise WsssError(f"the patch has {len(present)} labels, the model {n_fg} classes")
    prob[:n_fg][~present] = -1.0  # absent classes never win
    mask = np.argmax(prob, axis=0).astype(np.uint8)
    mask[mask == n_fg] = BACKGROUND
    return mask


def single_label_mask(rgb: np.ndarray, cls: int, post_params: PostprocParams) -> np.ndarray:
    """The mask of a patch labelled with the one class ``cls``, without a model: ``cls``
    wherever there is tissue, background where the post-processing's glass detection
    (``white_method``, ``white_threshold``, ``white_min_size``) sees glass."""
    from ..classes import BACKGROUND
    from ..postproc.glass import glass_mask

    mask = np.full(rgb.shape[:2], cls, np.uint8)
    glass = glass_mask(rgb, post_params.white_method, post_params.white_threshold,
                       post_params.white_min_size)
    if glass is not None:
        mask[glass] = BACKGROUND
    return mask


def mark_uncertain(mask: np.ndarray, cams: np.ndarray, present: np.ndarray, margin: float
                   ) -> np.ndarray:
    """Set 255 where a pixel's class CAM leads the best other present class by < ``margin``."""
    classes = np.flatnonzero(present)
    if len(classes) < 2:
        return mask
    out = mask.copy()
    for c in classes:
        others = np.max(cams[[k for k in classes if k != c]], axis=0)
        out[(mask == c) & (cams[c] - others < margin)] = 255
    return out


def make_pseudo_masks(
    model,
    data: str | Path | Sequence[PatchItem],
    out_dir: str | Path,
    cam_params: CamParams | None = None,
    post_params: PostprocParams | None = None,
    csv_path: str | Path | None = None,
    on_bad: str = "skip",
    ignore_margin: float = 0.0,
    exact_single: bool = False,
    cam_epithelium: float = 0.0,
) -> Generator[Progress, None, Path]:
    """Write one pseudo-mask PNG per training patch into ``out_dir``.

    Args:
        model: a CAM model (``models.checkpoint.load_model``), or a segmentation model
            (self-training: see :func:`pseudo_mask`).
        data: a patch folder (challenge layout, or with ``csv_path``) or scanned items.
        out_dir: where the masks go (created); same file names as the patches, ``.png``.
        cam_params: multi-scale CAM parameters (default :class:`CamParams`).
        post_params: post-processing parameters (default :class:`PostprocParams`).
        csv_path: labels from a CSV instead of the file names.
        on_bad: ``'skip'`` or ``'stop'`` on bad input files.
        ignore_margin: CAM margin under which tissue pixels are left unlabelled (255);
            see :func:`pseudo_mask`.
        exact_single: single-label patches' masks without the model (their class on
            tissue, background on glass); see :func:`single_label_mask`.
        cam_epithelium: weight of the epithelium prior (:mod:`wsss_napari.epithelium`) in
            a CAM model's masks of multi-label patches; 0 = off (measured: no gain on top
            of the segmentation model's own prior, ``cam_params.epithelium``).

    Yields:
        ``Progress('pseudo', done, total)`` per patch.

    Returns:
        ``out_dir``.
    """
    from ..device import choose_device
    from ..io.atomic import atomic_write_text, check_writable_dir
    from ..stain import image_for_model

    cam_params = cam_params or CamParams()
    post_params = post_params or PostprocParams()
    items = _pseudo_items(data, csv_path, on_bad)
    out = check_writable_dir(out_dir)
    device = choose_device(cam_params.device)
    model.eval()
    kind, prior_of = model_kind(model), _prior_source(model, cam_epithelium)
    for i, it in enumerate(items):
        rgb = image_for_model(raw := load_rgb(it.path), model)  # the model's training stain
        prior = prior_of(raw, it.label_array) if prior_of else None
        mask = pseudo_mask(model, rgb, it.label_array, cam_params, post_params, device=device,
                           ignore_margin=ignore_margin, exact_single=exact_single,
                           prior=prior, prior_weight=cam_epithelium)
        save_mask_png(mask, out / (it.path.stem + ".png"), MaskGeometry(slide=it.path.name))
        yield Progress("pseudo", i + 1, len(items))
    record = RunRecord.make(cam_params, post_params, model_name=str(getattr(model, "source", "")),
                            model_hash=str(getattr(model, "file_hash", "")), mask_from=kind)
    atomic_write_text(out / "pseudo.run.json", _with_prior(record, prior_of, cam_epithelium))
    return out


def _pseudo_items(data, csv_path, on_bad: str) -> list[PatchItem]:
    """The patches of ``data`` (a folder is scanned, its problems logged) as items."""
    if not isinstance(data, (str, Path)):
        return list(data)
    report = scan_patches(data, csv_path=csv_path)
    if report.problems or report.notes:
        log.warning("pseudo-mask input report:\n%s", report.summary())
    return resolve_bad(report, on_bad)


def _with_prior(record: RunRecord, prior_of, weight: float) -> str:
    """The record as JSON, with the CAM pseudo-masks' epithelium prior when one was used."""
    if prior_of:
        import dataclasses

        from ..epithelium import prior_record

        prior = {"cam_epithelium": prior_record(weight)}
        record = dataclasses.replace(record, params={**record.params, **prior})
    return record.to_json()


def _prior_source(model, weight: float):
    """``(rgb, labels) -> prior or None`` for :func:`make_pseudo_masks`, or ``None`` when off.

    Only patches with two or more labels need the prior; the others skip the network."""
    if not weight >= 0 or weight == float("inf"):
        raise WsssError(f"the epithelium prior's weight must be 0 (off) or positive, "
                        f"not {weight!r}")
    if weight == 0:
        return None
    if model_kind(model) == "seg":
        raise WsssError("cam_epithelium (--cam-epithelium) is for CAM models; a segmentation "
                        "model's masks take the prior of its CamParams (--epithelium)")
    from ..epithelium import load_epithelium_prior

    prior_net = load_epithelium_prior()
    mpp = model.config.mpp or 1.0
    names = tuple(model.config.class_names)

    def prior_of(rgb: np.ndarray, labels: np.ndarray) -> np.ndarray | None:
        if np.count_nonzero(labels) < 2:
            return None
        return prior_net.class_prior(rgb, mpp, names)

    return prior_of
