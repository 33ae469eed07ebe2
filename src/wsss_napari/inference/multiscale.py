"""Multi-scale sliding-crop CAMs of one image, as in the method's test procedure.

For each scale the image is resized, cut into crops of the training size with a stride,
and the CAMs of overlapping crops are averaged; the scales are resized back and averaged;
finally each class is divided by its maximum over the image, giving values in ``[0, 1]``.

Speed: crops of *all* scales go through the network together in batches; crops are views
of the (padded, resized) image made by ``Tensor.unfold`` and gathered per batch by index,
and their CAMs are summed into a canvas at CAM resolution with one ``index_add_`` per batch,
so there is no Python loop per crop. The image travels to the device as uint8 and is
resized and normalised there; on CUDA, AMP and channels_last are used.

Image-level scores: ``sigmoid`` of the logits of the scale-1 crops (the scale nearest 1),
maximum over crops -- the probability that the class is present *somewhere*. For an image
no larger than a crop this is exactly the classifier's output for the whole image.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import WsssError
from ..params import CamParams

#: Pixels outside the image (padding) are white: glass, the neutral background of H&E.
PAD_VALUE = 255.0


@dataclass
class CamResult:
    """CAMs of one image.

    Attributes:
        cams: float32 ``(C, H, W)`` in ``[0, 1]`` (each class divided by its image maximum).
        scores: float32 ``(C,)`` image-level class probabilities (see module docstring).
        maxima: float32 ``(C,)`` the unnormalised per-class maxima that were divided out.
        scale_cams: float32 ``(S, C, H, W)`` each scale's maps divided by the same maxima
            (``CamParams.keep_scales``), else ``None``.
    """

    cams: np.ndarray
    scores: np.ndarray
    maxima: np.ndarray
    scale_cams: np.ndarray | None = None


def crop_geometry(model: Any, params: CamParams) -> tuple[int, int]:
    """``(crop_size, stride)`` in px: the params, or the model's input size and half of it."""
    crop = int(params.crop_size or model.config.input_size)
    stride = int(params.stride or max(1, crop // 2))
    return crop, stride


def normalize_cams(raw: np.ndarray, maxima: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """Divide each class map by its maximum (classes with a ~zero maximum stay zero)."""
    m = np.asarray(maxima, dtype=np.float32).reshape(-1, 1, 1)
    out = raw / np.maximum(m, eps)
    out[np.broadcast_to(m <= eps, out.shape)] = 0.0
    return np.clip(out, 0.0, 1.0, out=out).astype(np.float32, copy=False)


def prepare_model(model: Any, device: Any) -> Any:
    """Eval mode on ``device``; channels_last on CUDA (faster convolutions)."""
    import torch

    model.eval()
    first = next(model.parameters(), None)
    if first is not None and first.device != device:
        model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    return model


def multiscale_cam(model: Any, image: np.ndarray, params: CamParams | None = None,
                   device: Any = None) -> CamResult:
    """Multi-scale CAMs of ``image``.

    Args:
        model: a CAM model (CamNet / GradCamNet) from ``models``.
        image: uint8 RGB ``(H, W, 3)``.
        params: scales, crop size, stride, flip, batch size, device, AMP.
        device: a ``torch.device``; default ``choose_device(params.device)``.

    Returns:
        :class:`CamResult` with CAMs normalised per class to ``[0, 1]`` over this image.
    """
    from ..progress import run_to_end

    params = params or CamParams()
    per_scale: list | None = [] if params.keep_scales else None
    raw, scores = run_to_end(iter_raw_cams(model, image, params, device=device,
                                           per_scale=per_scale))
    maxima = raw.reshape(raw.shape[0], -1).max(axis=1) if raw.size else np.zeros(raw.shape[0])
    scale_cams = (np.stack([normalize_cams(m, maxima) for m in per_scale])
                  if per_scale is not None else None)
    return CamResult(normalize_cams(raw, maxima), scores, maxima.astype(np.float32), scale_cams)


def _check_image(image: Any) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise WsssError(f"expected an RGB image (H, W, 3), got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise WsssError(f"expected a uint8 RGB image, got dtype {arr.dtype}")
    return np.ascontiguousarray(arr[..., :3])


def iter_raw_cams(model: Any, image: np.ndarray, params: CamParams, device: Any = None,
                  out_size: tuple[int, int] | None = None, per_scale: list | None = None
                  ) -> Generator[Any, None, tuple[np.ndarray, np.ndarray]]:
    """Unnormalised multi-scale CAMs; yields ``Progress`` after every batch.

    Args:
        model, image, params, device: as in :func:`multiscale_cam`.
        out_size: ``(h, w)`` of the returned maps (default the image size); the whole-slide
            path asks for a coarser grid so it never materialises full-resolution maps.

    Returns:
        ``(raw float32 (C, h, w), scores float32 (C,))``.
    """
    import torch
    from torch.nn import functional as F

    from ..device import DEVICE_LOCK, choose_device
    from ..progress import Progress

    img = _check_image(image)
    device = device if device is not None else choose_device(params.device)
    device = torch.device(device)
    prepare_model(model, device)
    crop, stride = crop_geometry(model, params)
    h, w = img.shape[:2]
    oh, ow = out_size or (h, w)
    n_cls = model.config.num_classes
    cuda = device.type == "cuda"
    amp = bool(params.amp and cuda)
    needs_grad = bool(getattr(model, "needs_grad", False))
    # CAM grid: crops start at multiples of `stride`, so their CAMs land on a grid of cell
    # `cell` px when it divides both crop and stride; each crop's CAM is resized to k x k.
    cell = math.gcd(int(getattr(model, "stride", 1)) or 1, math.gcd(crop, stride))
    k = crop // cell

    # torch wants a writable array; a read-only view (zarr, dask) is copied once here
    src = torch.from_numpy(img if img.flags.writeable else img.copy())
    if cuda:
        src = src.pin_memory()
    src = src.to(device, non_blocking=True).permute(2, 0, 1)[None].float()  # (1,3,H,W) 0-255

    # geometry of every scale: resized size, padded size, crop grid
    scales = []
    for s in params.scales:
        hs, ws = max(1, round(h * s)), max(1, round(w * s))
        ny = 1 + max(0, math.ceil((hs - crop) / stride))
        nx = 1 + max(0, math.ceil((ws - crop) / stride))
        scales.append((float(s), hs, ws, crop + (ny - 1) * stride, crop + (nx - 1) * stride,
                       ny, nx))
    ref = min(range(len(scales)), key=lambda i: abs(math.log(scales[i][0])))
    total = sum(sc[5] * sc[6] for sc in scales)
    # (scale index, crop row, crop col) of every crop, all scales together
    index = np.concatenate([
        np.stack(np.meshgrid([i], np.arange(sc[5]), np.arange(sc[6]), indexing="ij"), -1)
        .reshape(-1, 3) for i, sc in enumerate(scales)
    ])

    views, sums, counts = [], [], []
    for s, hs, ws, hp, wp, _ny, _nx in scales:
        x = src
        if (hs, ws) != (h, w):
            x = F.interpolate(src, size=(hs, ws), mode="bilinear", align_corners=False,
                              antialias=s < 1)
        x = F.pad(x, (0, wp - ws, 0, hp - hs), value=PAD_VALUE)
        # (ny, nx, 3, crop, crop) view: no copy until a batch gathers it
        views.append(x.unfold(2, crop, stride).unfold(3, crop, stride)[0].permute(1, 2, 0, 3, 4))
        sums.append(torch.zeros(n_cls, hp // cell, wp // cell, device=device))
        counts.append(torch.zeros(1, hp // cell, wp // cell, device=device))
    score_max = torch.zeros(n_cls, device=device)
    offs = torch.arange(k, device=device)
    done = 0
    for b0 in range(0, total, params.batch_size):
        chunk = index[b0:b0 + params.batch_size]
        batch_parts, where = [], []
        for si in np.unique(chunk[:, 0]):
            sel = chunk[chunk[:, 0] == si]
            iy = torch.as_tensor(sel[:, 1], device=device)
            ix = torch.as_tensor(sel[:, 2], device=device)
            batch_parts.append(views[si][iy, ix])
            where.append((int(si), iy, ix))
        batch = model.normalize(torch.cat(batch_parts))
        if cuda:
            batch = batch.contiguous(memory_format=torch.channels_last)
        with DEVICE_LOCK, torch.autocast(device.type, enabled=amp), \
                (torch.no_grad() if needs_grad else torch.inference_mode()):
            if params.flip:
                logits, cams = model.logits_and_cams(torch.cat([batch, batch.flip(-1)]))
                n = batch.shape[0]
                logits = (logits[:n] + logits[n:]) / 2
                cams = (cams[:n] + cams[n:].flip(-1)) / 2
            else:
                logits, cams = model.logits_and_cams(batch)
        with torch.inference_mode():
            cams = cams.float()
            if cams.shape[-2:] != (k, k):
                cams = F.interpolate(cams, size=(k, k), mode="bilinear", align_corners=False)
            start = 0
            for si, iy, ix in where:
                n = iy.numel()
                part = cams[start:start + n]
                if si == ref:
                    score_max = torch.maximum(score_max, torch.sigmoid(
                        logits[start:start + n].float()).amax(0))
                start += n
                wc = sums[si].shape[-1]
                rows = (iy * (stride // cell))[:, None, None] + offs[None, :, None]
                cols = (ix * (stride // cell))[:, None, None] + offs[None, None, :]
                flat = (rows * wc + cols).reshape(-1)
                sums[si].view(n_cls, -1).index_add_(
                    1, flat, part.permute(1, 0, 2, 3).reshape(n_cls, -1))
                counts[si].view(1, -1).index_add_(
                    1, flat, torch.ones(1, flat.numel(), device=device))
        done += len(chunk)
        yield Progress("CAM crops", done, total)

    with torch.inference_mode():
        fused = torch.zeros(n_cls, oh, ow, device=device)
        for (_s, hs, ws, hp, wp, _, _), acc, cnt in zip(scales, sums, counts, strict=True):
            avg = acc / cnt.clamp_min(1)
            # the canvas covers the padded scaled image: resize so that the image part
            # becomes exactly (oh, ow), then drop the padding
            th, tw = round(hp * oh / hs), round(wp * ow / ws)
            up = F.interpolate(avg[None], size=(max(th, oh), max(tw, ow)), mode="bilinear",
                               align_corners=False)[0]
            fused += up[:, :oh, :ow]
            if per_scale is not None:
                per_scale.append(up[:, :oh, :ow].cpu().numpy().astype(np.float32))
        fused /= len(scales)
    return fused.cpu().numpy().astype(np.float32), score_max.cpu().numpy().astype(np.float32)
