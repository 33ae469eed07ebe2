"""Model + image -> label mask (0 tumor, 1 stroma, 2 normal, 3 background).

CAM models: multi-scale CAMs (``inference.multiscale``) then the post-processing chain.
Segmentation models: softmax over ``classes + background`` logits, blended over overlapping
windows of the model's training size (any image size), argmax. Either way, an explicit
background mask (the challenge provides one) forces class 3; for a segmentation model the
other pixels then get their best tissue class.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import WsssError
from ..classes import BACKGROUND
from ..models.config import model_kind
from ..params import CamParams, PostprocParams

#: Segmentation windows are a multiple of this (the encoder's stride).
SEG_MULTIPLE = 32


def predict_mask(model: Any, image: np.ndarray, cam_params: CamParams | None = None,
                 post_params: PostprocParams | None = None, background: np.ndarray | None = None,
                 device: Any = None) -> np.ndarray:
    """Label mask of ``image``.

    Args:
        model: a loaded model (``models.checkpoint.load_model``): CAM (``config.kind ==
            'cam'``) or segmentation (``'seg'``).
        image: uint8 RGB (H, W, 3).
        cam_params: multi-scale CAM parameters (CAM models); segmentation models use its
            ``crop_size`` / ``stride`` (windows; 0 = the model's input size / half of it),
            ``batch_size`` and ``device``.
        post_params: post-processing parameters (CAM models); default: the model's
            recommended ones (``models.checkpoint.recommended_postproc``).
        background: (H, W) mask, nonzero = background (forced to class 3).
        device: torch device; default from ``cam_params.device``.

    Returns:
        uint8 (H, W) mask with values 0..3.
    """
    cam_params = cam_params or CamParams()
    if post_params is None:
        from ..models.checkpoint import recommended_postproc

        post_params = recommended_postproc(model)
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise WsssError(f"expected an RGB image (H, W, 3), got shape {image.shape}")
    image = np.ascontiguousarray(image[..., :3], dtype=np.uint8)
    if background is not None:
        background = np.asarray(background)
        if background.shape != image.shape[:2]:
            raise WsssError(f"background mask {background.shape} does not match the image "
                            f"{image.shape[:2]}")
    kind = model_kind(model)
    if kind == "seg":
        return seg_predict(model, image, cam_params, device, background=background)
    if kind != "cam":
        raise WsssError(f"cannot predict with a model of kind {kind!r} (expected 'cam' or 'seg')")
    from ..postproc import postprocess
    from .multiscale import multiscale_cam

    res = multiscale_cam(model, image, cam_params, device=device)
    return postprocess(res.cams, post_params, image=image, scores=res.scores,
                       background=background)


def seg_predict(model: Any, image: np.ndarray, params: CamParams | None = None,
                device: Any = None, background: np.ndarray | None = None) -> np.ndarray:
    """Label mask of a segmentation model, from overlapping windows of its training size.

    A network trained on small crops and run on a whole image sees much more context than it
    ever saw in training (its deep features saw padding there) and its decisions shift, so
    every image, whatever its size, goes through windows of ``params.crop_size`` (default the
    model's ``input_size``) at ``params.stride`` (default half a window); on CUDA the windows
    travel as uint8 through pinned memory and run with AMP (``params.amp``) and
    channels_last, on CPU with ``params.threads`` cores (``device.cpu_plan``). Softmax
    probabilities are blended with a Gaussian window weight (centres count more than borders,
    which saw less context); images smaller than a window are padded with white (glass).

    Args:
        model: a ``SegNet`` (``config.kind == 'seg'``).
        image: uint8 RGB (H, W, 3).
        params: ``crop_size``, ``stride``, ``batch_size``, ``device``, ``tta`` (test-time
            augmentation set, :mod:`wsss_napari.inference.tta`) and ``flip`` (with ``tta``
            ``none``: average the horizontally mirrored windows) are used.
        device: torch device; default from ``params.device``.
        background: optional (H, W) mask, nonzero = background. When given it is taken as
            the whole truth about background: those pixels are class 3 and every other pixel
            gets its most probable *tissue* class.

    Returns:
        uint8 (H, W) mask with values 0..3 (the model's last channel = background = 3).
    """
    prob = seg_probabilities(model, image, params, device)
    n_fg = prob.shape[0] - 1
    if background is None:
        label = np.argmax(prob, axis=0).astype(np.uint8)
        label[label == n_fg] = BACKGROUND
        return label
    label = np.argmax(prob[:n_fg], axis=0).astype(np.uint8)
    label[np.asarray(background) != 0] = BACKGROUND
    return label


def seg_probabilities(model: Any, image: np.ndarray, params: CamParams | None = None,
                      device: Any = None) -> np.ndarray:
    """Window-blended softmax ``float32 (C + 1, H, W)`` of a segmentation model (see above),
    its tissue reassigned by the epithelium prior when ``params.epithelium`` > 0
    (:func:`wsss_napari.epithelium.apply_epithelium_prior`) and its normal-versus-stroma
    split made by the region when ``params.context_um`` > 0
    (:func:`wsss_napari.airiness.regional_vote`)."""
    import torch

    from ..device import DEVICE_LOCK, CpuPlan, choose_device, cpu_plan, torch_threads
    from .tta import tta_probabilities

    params = params or CamParams()
    device = device or choose_device(params.device)
    cfg = model.config
    h, w = image.shape[:2]
    size = _round_up(int(params.crop_size or cfg.input_size))
    stride = max(1, min(int(params.stride or size // 2), size))
    hp, wp = max(h, size), max(w, size)
    if (hp, wp) != (h, w):  # smaller than one window: pad with glass
        padded = np.full((hp, wp, 3), 255, np.uint8)
        padded[:h, :w] = image
        image = padded
    corners = [(y, x) for y in _starts(hp, size, stride) for x in _starts(wp, size, stride)]
    weight = window_weight(size)
    n_out = len(cfg.class_names) + 1
    acc = np.zeros((n_out, hp, wp), np.float32)
    norm = np.zeros((hp, wp), np.float32)
    batch = max(1, int(params.batch_size))
    cuda = torch.device(device).type == "cuda"
    amp = bool(params.amp and cuda)
    plan = cpu_plan(params.threads) if not cuda else None
    # CPU: one batch at a time on all the cores this process may use (cpu_plan's cores)
    threads = None if plan is None else CpuPlan(streams=1, intra=plan.streams * plan.intra)
    with DEVICE_LOCK, torch_threads(threads), torch.inference_mode():
        model.eval()
        if next(model.parameters()).device != device:
            model.to(device)
        model.to(memory_format=torch.channels_last)
        for i in range(0, len(corners), batch):
            chunk = corners[i:i + batch]
            crops = torch.from_numpy(np.stack([image[y:y + size, x:x + size] for y, x in chunk]))
            if cuda:  # uint8 through pinned memory, normalised on the device
                crops = crops.pin_memory()
            x_in = crops.to(device, non_blocking=True).permute(0, 3, 1, 2)
            x_in = model.normalize(x_in).contiguous(memory_format=torch.channels_last)
            # test-time augmentation (inference.tta); --flip alone = the mirrored windows
            tta = params.tta if params.tta != "none" or not params.flip else "hflip"
            with torch.autocast(torch.device(device).type, enabled=amp):
                p = tta_probabilities(model, x_in, tta)
            p = p.float().cpu().numpy()
            for (y, x), pi in zip(chunk, p, strict=True):
                acc[:, y:y + size, x:x + size] += pi * weight
                norm[y:y + size, x:x + size] += weight
    acc /= norm
    return _tissue_priors(acc[:, :h, :w], image[:h, :w], cfg, params)


def _tissue_priors(prob: np.ndarray, image: np.ndarray, cfg: Any, params: CamParams
                   ) -> np.ndarray:
    """The model's probabilities of ``image`` with the anatomy the parameters ask for: the
    epithelium prior (tumor vs stroma / normal, with airiness) and the regional vote."""
    if params.epithelium > 0:  # tumor vs stroma / normal by SHELL's epithelium network
        from ..epithelium import apply_epithelium_prior

        prob = apply_epithelium_prior(prob, image, cfg, params.epithelium,
                                      params.air_threshold)
    if params.context_um > 0:  # normal vs stroma by the region (airiness.regional_vote)
        from ..airiness import regional_vote

        prob = regional_vote(prob, cfg.class_names, params.context_um / (cfg.mpp or 1.0))
    return prob


def window_weight(size: int, sigma_frac: float = 0.25, floor: float = 1e-3) -> np.ndarray:
    """Gaussian blending weight ``(size, size)`` of one window, 1 at its centre."""
    r = (np.arange(size, dtype=np.float32) - (size - 1) / 2.0) / (sigma_frac * size)
    g = np.exp(-0.5 * r * r)
    return np.maximum(np.outer(g, g), floor).astype(np.float32)


def _round_up(n: int, m: int = SEG_MULTIPLE) -> int:
    return -(-n // m) * m


def _starts(n: int, size: int, stride: int) -> list[int]:
    """Window origins covering ``0..n`` (the last window ends at ``n``)."""
    if n <= size:
        return [0]
    starts = list(range(0, n - size, stride))
    return [*starts, n - size]
