"""Multi-scale sliding-crop CAMs of one image (or of one tile of a larger region).

For each scale the image is resized, cut into crops of the training size with a stride,
and the CAMs of overlapping crops are blended with a smooth (Gaussian) window; the scales
are resampled back and averaged; finally each class is divided by its maximum over the
image, giving values in ``[0, 1]``.

**One crop grid per region, whatever the tiling.** A crop at scale ``s`` covers ``foot``
image pixels (``crop / s``, rounded so that ``foot`` and the crop ``pitch`` are whole pixels
with ``pitch / foot == stride / crop``; e.g. with 128 px crops every 96 px, 0.75 becomes
128 / 172 = 0.744) and crops start at multiples of ``pitch`` from the region's corner. A
tile of a slide computes exactly the
crops of that global grid that touch it, from a read that covers their footprints
(:func:`reach` px around the tile), resizes with the same pixel mapping as the whole region
would, and resamples the blended maps at the same global coordinates; so tiled maps equal
the maps of the region computed in one piece (up to float rounding).

Speed: crops of *all* scales go through the network together in batches; crops are views
of the (padded, resized) image made by ``Tensor.unfold`` and gathered per batch by index,
and their CAMs are summed into a canvas at CAM resolution with one ``index_add_`` per batch.
Crops can be skipped (``keep``: the slide path skips crops without tissue). On CPU, batches
run on :func:`~wsss_napari.device.cpu_plan` streams with a deliberate number of threads; on
CUDA the image travels as uint8 (pinned), AMP and channels_last are used.

Image-level scores: ``sigmoid`` of the logits of the scale-1 crops (the scale nearest 1),
maximum over crops -- the probability that the class is present *somewhere*. For an image
no larger than a crop this is exactly the classifier's output for the whole image.

The crop machinery (views, batches, blending, fusing) lives in :mod:`.crop_blend`.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import WsssError
from ..params import CamParams
from .crop_blend import (
    PAD_VALUE,
    _Blender,
    _fuse_scales,
    _keep_for_later,
    _run_and_blend,
    _run_crops,
    _scale_layers,
)


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


@dataclass(frozen=True)
class ScaleGrid:
    """The crop grid of one scale over a region (all lengths in region px).

    Attributes:
        scale: the requested scale; ``eff`` (``crop / foot``) is the one used.
        foot: region px covered by one crop.
        pitch: region px between the origins of neighbouring crops.
        align: resized windows start on multiples of this (so ``start * eff`` is whole).
        margin: extra px read around the crops for the resampling filter.
        ny, nx: crops covering the region.
    """

    scale: float
    crop: int
    stride: int
    foot: int
    pitch: int
    align: int
    margin: int
    ny: int
    nx: int

    @property
    def eff(self) -> float:
        return self.crop / self.foot

    def crop_range(self, start: int, stop: int, n: int, pad: int = 0) -> tuple[int, int]:
        """Indices ``[i0, i1)`` of the crops whose footprint meets ``[start - pad,
        stop + pad)``."""
        i0 = max(0, (start - pad - self.foot) // self.pitch + 1)
        i1 = min(n, -(-(stop + pad) // self.pitch))
        return i0, max(i0, i1)

    def sample_pad(self, cell: int, out_stride: int) -> int:
        """Region px beyond an output box that its bilinear samples of this scale's canvas
        (cells of ``cell`` scaled px) can reach: crops there count too."""
        return -(-cell * self.foot // self.crop) + out_stride


#: Crop stride as a fraction of the crop when ``CamParams.stride`` is 0. Measured on the
#: held-out 3-fold benchmark (``benchmarks/bench_cam_defaults.py``, docs/cam.md): 3/4 of the
#: crop was as accurate as 1/2 (five scales: CAM + tuned post 0.377 vs 0.355, CAM argmax
#: 0.362 vs 0.357) at 0.64x the time.
DEFAULT_STRIDE = 0.75


def crop_geometry(model: Any, params: CamParams) -> tuple[int, int]:
    """``(crop_size, stride)`` in px: the params, or the model's input size and
    :data:`DEFAULT_STRIDE` of it."""
    crop = int(params.crop_size or model.config.input_size)
    stride = int(params.stride or max(1, round(crop * DEFAULT_STRIDE)))
    return crop, min(stride, crop)


def scale_grids(crop: int, stride: int, scales: Sequence[float],
                shape: tuple[int, int]) -> list[ScaleGrid]:
    """The crop grid of every scale over a region of ``shape`` (see the module docstring)."""
    g = math.gcd(crop, stride)
    c1, t1 = crop // g, stride // g
    out = []
    for s in scales:
        m = max(1, round(crop / (float(s) * c1)))
        foot, pitch = m * c1, m * t1
        align = foot // math.gcd(foot, crop)
        margin = int(math.ceil(2 * foot / crop)) + 1
        ny = 1 + max(0, -(-(shape[0] - foot) // pitch))
        nx = 1 + max(0, -(-(shape[1] - foot) // pitch))
        out.append(ScaleGrid(float(s), crop, stride, foot, pitch, align, margin, ny, nx))
    return out


def reach(model: Any, params: CamParams) -> int:
    """Context px a tile needs on every side so that its crops see what they would see in
    the whole region (the halo of the slide path)."""
    crop, stride = crop_geometry(model, params)
    cell = math.gcd(int(getattr(model, "stride", 1)) or 1, math.gcd(crop, stride))
    return max(sg.foot + sg.margin + sg.align + sg.sample_pad(cell, params.out_stride)
               for sg in scale_grids(crop, stride, params.scales, (1, 1)))


def normalize_cams(raw: np.ndarray, maxima: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """Divide each class map by its maximum (classes with a ~zero maximum stay zero)."""
    m = np.asarray(maxima, dtype=np.float32).reshape(-1, 1, 1)
    out = raw / np.maximum(m, eps)
    out[np.broadcast_to(m <= eps, out.shape)] = 0.0
    return np.clip(out, 0.0, 1.0, out=out).astype(np.float32, copy=False)


def prepare_model(model: Any, device: Any) -> Any:
    """Eval mode on ``device``, channels_last memory format (faster convolutions on CUDA
    and on CPU with oneDNN)."""
    import torch

    model.eval()
    first = next(model.parameters(), None)
    if first is not None and first.device != device:
        model.to(device)
    return model.to(memory_format=torch.channels_last)


def multiscale_cam(model: Any, image: np.ndarray, params: CamParams | None = None,
                   device: Any = None) -> CamResult:
    """Multi-scale CAMs of ``image``.

    Args:
        model: a CAM model (CamNet / GradCamNet) from ``models``.
        image: uint8 RGB ``(H, W, 3)``.
        params: scales, crop size, stride, flip, batch size, device, AMP, threads.
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
                  out_stride: int = 1, per_scale: list | None = None
                  ) -> Generator[Any, None, tuple[np.ndarray, np.ndarray]]:
    """Unnormalised multi-scale CAMs of a whole image; yields ``Progress`` after every batch.

    Args:
        model, image, params, device: as in :func:`multiscale_cam`.
        out_stride: image px per output pixel (the whole-slide path stores coarser maps).
        per_scale: if a list, each scale's maps (float32 ``(C, h, w)``, before averaging)
            are appended to it, in ``params.scales`` order.

    Returns:
        ``(raw float32 (C, ceil(H / out_stride), ceil(W / out_stride)), scores float32 (C,))``.
    """
    img = _check_image(image)
    h, w = img.shape[:2]
    raw, scores, _ = yield from iter_window_cams(
        model, img, params, region_shape=(h, w), window_box=(0, 0, h, w),
        core_box=(0, 0, h, w), out_stride=out_stride, device=device, per_scale=per_scale)
    return raw, scores


def iter_window_cams(model: Any, window: np.ndarray, params: CamParams, *,
                     region_shape: tuple[int, int], window_box: tuple[int, int, int, int],
                     core_box: tuple[int, int, int, int], out_stride: int = 1,
                     keep: Sequence[np.ndarray] | None = None, device: Any = None,
                     grids: Sequence[ScaleGrid] | None = None,
                     crop_cache: dict | None = None, per_scale: list | None = None
                     ) -> Generator[Any, None, tuple[np.ndarray, np.ndarray, int]]:
    """Unnormalised CAMs of ``core_box`` of a region, from the pixels in ``window``.

    Args:
        model, params, device: as in :func:`multiscale_cam`.
        window: uint8 RGB pixels of ``window_box`` = ``(y, x, h, w)`` in region px; it must
            hold every crop footprint that touches the core (``core_box`` grown by
            :func:`reach`, clipped to the region). Outside the region is white.
        region_shape: ``(H, W)`` of the region: crops start at its corner.
        core_box: ``(y, x, h, w)`` region px whose maps are returned; ``y`` and ``x``
            multiples of ``out_stride``.
        out_stride: region px per output pixel.
        keep: optional bool ``(ny, nx)`` per scale over the whole region grid
            (:func:`scale_grids`): False skips a crop (its footprint is glass).
        grids: the region's :func:`scale_grids` (computed when not given).
        crop_cache: optional dict ``(scale index, row, col) -> (CAM, logits)`` shared by the
            tiles of a region: crops found there are not run again, and crops that reach
            past the core's bottom or right edge are added (the caller evicts rows it has
            passed, :func:`evict_crops`).
        per_scale: if a list, each scale's maps of the core (before averaging) are
            appended to it, in ``params.scales`` order.

    Returns:
        ``(raw float32 (C, ceil(h / os), ceil(w / os)), scores float32 (C,), crops run)``.
    """
    import torch

    from ..device import torch_threads

    img = _check_image(window)
    job = _window_job(model, img, params, region_shape=region_shape, window_box=window_box,
                      core_box=core_box, out_stride=out_stride, device=device, grids=grids)
    layers, index, blender = _prepare_crops(job.net, img, job, keep, crop_cache)
    cy, cx, ch, cw = core_box

    def keep_later(si: int, sel: np.ndarray, cams: Any, logits: Any) -> None:
        if crop_cache is not None:  # keep what a later tile will need
            sg = job.grids[si]
            _keep_for_later(crop_cache, blender, sg, si, sel, cams, logits,
                            sg.sample_pad(job.cell, out_stride), (cy + ch, cx + cw))

    yield from _run_and_blend(index, _crop_forward(job.net, layers, job, params), blender,
                              batch_size=params.batch_size, plan=job.plan, k=job.k,
                              keep=keep_later)

    with torch.inference_mode(), torch_threads(job.plan):
        fused = _fuse_scales(job.grids, layers, n_cls=job.n_cls, out_shape=job.out_shape,
                             corner=(cy, cx), cell=job.cell, out_stride=out_stride,
                             stride=job.stride, device=job.device, per_scale=per_scale)
    return (fused.cpu().numpy().astype(np.float32),
            blender.score_max.cpu().numpy().astype(np.float32), len(index))


@dataclass(frozen=True)
class _WindowJob:
    """What :func:`iter_window_cams` derives from its arguments: the crop geometry
    (``cell``: px per CAM cell, ``k``: CAM cells per crop, ``ref``: the scale nearest 1, whose
    crops give the scores), the output shape, the device, the CPU plan (None on GPUs) and
    ``net``, the network that runs the crops (:func:`~wsss_napari.models.fuse.inference_model`:
    the model with BatchNorm folded, a copy that is never trained)."""

    crop: int
    stride: int
    cell: int
    k: int
    ref: int
    grids: list[ScaleGrid]
    out_shape: tuple[int, int]
    n_cls: int
    region_shape: tuple[int, int]
    window_box: tuple[int, int, int, int]
    core_box: tuple[int, int, int, int]
    out_stride: int
    device: Any
    plan: Any
    net: Any


def _window_job(model: Any, img: np.ndarray, params: CamParams, *,
                region_shape: tuple[int, int], window_box: tuple[int, int, int, int],
                core_box: tuple[int, int, int, int], out_stride: int, device: Any,
                grids: Sequence[ScaleGrid] | None) -> _WindowJob:
    """Check the boxes against the pixels, put the model on its device and derive the crop
    geometry of a window (see :func:`iter_window_cams` for the arguments)."""
    import torch

    from ..device import choose_device, cpu_plan
    from ..models.fuse import inference_model

    device = torch.device(device if device is not None else choose_device(params.device))
    prepare_model(model, device)
    net = inference_model(model)
    crop, stride = crop_geometry(model, params)
    cy, cx, ch, cw = core_box
    if img.shape[:2] != tuple(window_box[2:]):
        raise WsssError(f"window pixels {img.shape[:2]} do not match the window box {window_box}")
    if cy % out_stride or cx % out_stride:
        raise WsssError(f"core box {core_box} must start on multiples of out_stride")
    grids = list(grids) if grids is not None else scale_grids(crop, stride, params.scales,
                                                              region_shape)
    cell = math.gcd(int(getattr(model, "stride", 1)) or 1, math.gcd(crop, stride))
    ref = min(range(len(grids)), key=lambda i: abs(math.log(grids[i].eff)))
    return _WindowJob(
        crop=crop, stride=stride, cell=cell, k=crop // cell, ref=ref, grids=grids,
        out_shape=(-(-ch // out_stride), -(-cw // out_stride)),
        n_cls=model.config.num_classes, region_shape=tuple(region_shape),
        window_box=tuple(window_box), core_box=tuple(core_box), out_stride=out_stride,
        device=device, plan=cpu_plan(params.threads) if device.type == "cpu" else None,
        net=net)


def _prepare_crops(model: Any, img: np.ndarray, job: _WindowJob,
                   keep: Sequence[np.ndarray] | None, crop_cache: dict | None
                   ) -> tuple[list, np.ndarray, _Blender]:
    """Upload the window (pinned uint8 on CUDA), cut each scale's crops as views of its
    resized, normalised pixels, and blend the crops a neighbouring tile already ran: the
    layers, the index of the crops still to run and the blender."""
    import contextlib
    from concurrent.futures import ThreadPoolExecutor

    import torch

    from ..device import torch_threads

    streams = job.plan.streams if job.plan is not None else 1
    with torch_threads(job.plan), contextlib.ExitStack() as stack:
        pool = (stack.enter_context(ThreadPoolExecutor(streams, thread_name_prefix="wsss-scale"))
                if streams > 1 and len(job.grids) > 1 else None)
        src = torch.from_numpy(img if img.flags.writeable else img.copy())
        if job.device.type == "cuda":
            src = src.pin_memory()
        src = src.to(job.device, non_blocking=True).permute(2, 0, 1)[None]  # (1, 3, h, w)
        normalize_ = getattr(model, "normalize_", None) or model.normalize
        src = normalize_(src.float())  # once per window, not once per scale
        white = normalize_(torch.full((1, 3, 1, 1), PAD_VALUE, device=job.device))
        layers, index = _scale_layers(
            src, job.grids, keep, pool=pool, region_shape=job.region_shape,
            window_box=job.window_box, core_box=job.core_box, crop=job.crop,
            stride=job.stride, cell=job.cell, out_stride=job.out_stride, n_cls=job.n_cls,
            white=white)
        blender = _Blender(layers, job.k, job.stride // job.cell, job.n_cls, job.ref,
                           job.device)
        if crop_cache is not None and len(index):
            index = blender.blend_cached(index, crop_cache)
    return layers, index, blender


def _crop_forward(model: Any, layers: list, job: _WindowJob, params: CamParams) -> Any:
    """``forward(chunk) -> (logits, cams)`` of a chunk of the crop index (:func:`_run_crops`
    with this window's layers and the params' AMP and flip)."""
    import functools

    cuda = job.device.type == "cuda"
    return functools.partial(
        _run_crops, model=model, layers=layers, device=job.device,
        amp=bool(params.amp and cuda), needs_grad=bool(getattr(model, "needs_grad", False)),
        flip=params.flip)


def evict_crops(crop_cache: dict, grids: Sequence[ScaleGrid], row_start: int) -> None:
    """Drop cached crops that no tile starting at region row ``row_start`` (or later) uses."""
    first = [sg.crop_range(row_start, row_start + 1, sg.ny, sg.foot)[0] for sg in grids]
    for kk in [kk for kk in crop_cache if kk[1] < first[kk[0]]]:
        del crop_cache[kk]
