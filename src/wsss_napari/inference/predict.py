"""Model + image -> label mask (0 tumor, 1 stroma, 2 normal, 3 background).

CAM models: multi-scale CAMs (``inference.multiscale``) then the post-processing chain.
Segmentation models: softmax over ``classes + background`` logits, averaged over
overlapping windows for large images, argmax. Either way, an explicit background mask (the
challenge provides one) forces class 3.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import WsssError
from ..classes import BACKGROUND
from ..params import CamParams, PostprocParams

#: Images up to this edge go through a segmentation model in one piece.
SEG_WHOLE_MAX = 1024
#: Segmentation inputs are padded to a multiple of this (encoder stride).
SEG_MULTIPLE = 32


def predict_mask(model: Any, image: np.ndarray, cam_params: CamParams | None = None,
                 post_params: PostprocParams | None = None, background: np.ndarray | None = None,
                 device: Any = None) -> np.ndarray:
    """Label mask of ``image``.

    Args:
        model: a loaded model (``models.checkpoint.load_model``): CAM (``config.kind ==
            'cam'``) or segmentation (``'seg'``).
        image: uint8 RGB (H, W, 3).
        cam_params: multi-scale CAM parameters (CAM models; also ``device`` and ``crop_size``
            for segmentation models).
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
    kind = getattr(getattr(model, "config", None), "kind", None)
    if kind == "seg":
        mask = seg_predict(model, image, cam_params, device)
        if background is not None:
            mask[background != 0] = BACKGROUND
        return mask
    if kind != "cam":
        raise WsssError(f"cannot predict with a model of kind {kind!r} (expected 'cam' or 'seg')")
    from ..postproc import postprocess
    from .multiscale import multiscale_cam

    res = multiscale_cam(model, image, cam_params, device=device)
    return postprocess(res.cams, post_params, image=image, scores=res.scores,
                       background=background)


def seg_predict(model: Any, image: np.ndarray, params: CamParams | None = None,
                device: Any = None) -> np.ndarray:
    """Argmax of a segmentation model's softmax (channel C = background -> label 3)."""
    import torch

    from ..device import DEVICE_LOCK, choose_device

    params = params or CamParams()
    device = device or choose_device(params.device)
    cfg = model.config
    h, w = image.shape[:2]
    n_out = len(cfg.class_names) + 1
    if max(h, w) <= SEG_WHOLE_MAX:
        windows = [(0, 0, h, w)]
        win = (_round_up(h), _round_up(w))
    else:
        size = _round_up(max(int(params.crop_size or cfg.input_size), 512))
        stride = int(params.stride or size // 2)
        windows = [(y, x, min(y + size, h), min(x + size, w))
                   for y in _starts(h, size, stride) for x in _starts(w, size, stride)]
        win = (size, size)
    mean = torch.tensor(cfg.mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    prob = np.zeros((n_out, h, w), np.float32)
    with DEVICE_LOCK, torch.inference_mode():
        model.eval()
        if next(model.parameters()).device != device:
            model.to(device)
        for y0, x0, y1, x1 in windows:
            crop = np.full((*win, 3), 255, np.uint8)  # white = glass outside the image
            crop[: y1 - y0, : x1 - x0] = image[y0:y1, x0:x1]
            x = torch.from_numpy(crop).to(device).permute(2, 0, 1)[None].float() / 255.0
            logits = model((x - mean) / std)
            p = torch.softmax(logits.float(), dim=1)[0, :, : y1 - y0, : x1 - x0]
            prob[:, y0:y1, x0:x1] += p.cpu().numpy()
    label = np.argmax(prob, axis=0).astype(np.uint8)
    return np.where(label == n_out - 1, BACKGROUND, label).astype(np.uint8)


def _round_up(n: int, m: int = SEG_MULTIPLE) -> int:
    return -(-n // m) * m


def _starts(n: int, size: int, stride: int) -> list[int]:
    if n <= size:
        return [0]
    starts = list(range(0, n - size, stride))
    return [*starts, n - size]
