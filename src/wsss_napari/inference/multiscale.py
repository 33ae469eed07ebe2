"""Multi-scale sliding-crop CAMs of one image (or of one tile of a larger region).

For each scale the image is resized, cut into crops of the training size with a stride,
and the CAMs of overlapping crops are blended with a smooth (Gaussian) window; the scales
are resampled back and averaged; finally each class is divided by its maximum over the
image, giving values in ``[0, 1]``.

**One crop grid per region, whatever the tiling.** A crop at scale ``s`` covers ``foot``
image pixels (``crop / s``, rounded so that ``foot`` and the crop ``pitch`` are whole pixels
with ``pitch / foot == stride / crop``; e.g. 0.75 becomes 224 / 298 = 0.752) and crops start
at multiples of ``pitch`` from the region's corner. A tile of a slide computes exactly the
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
"""

from __future__ import annotations

import math
from collections.abc import Generator, Sequence
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


def crop_geometry(model: Any, params: CamParams) -> tuple[int, int]:
    """``(crop_size, stride)`` in px: the params, or the model's input size and half of it."""
    crop = int(params.crop_size or model.config.input_size)
    stride = int(params.stride or max(1, crop // 2))
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


@dataclass
class _ScaleLayer:
    """One scale's crops that touch the core: their views and the blending canvas."""

    view: Any  # (rows, cols, 3, crop, crop) float views of the resized window
    i0: int  # grid row / column of view[0, 0]
    j0: int
    sum: Any  # (C, h, w) weighted CAM sum at CAM resolution
    wsum: Any  # (1, h, w) sum of weights


def _scale_layers(src: Any, grids: Sequence[ScaleGrid], keep: Sequence[np.ndarray] | None, *,
                  region_shape: tuple[int, int], window_box: tuple[int, int, int, int],
                  core_box: tuple[int, int, int, int], crop: int, stride: int, cell: int,
                  out_stride: int, n_cls: int) -> tuple[list[_ScaleLayer | None], np.ndarray]:
    """Per scale, the crops that touch the core (None where none is kept), cut as views of
    the resized window; and the index ``(n, 3)`` of (scale, local row, local col) to run."""
    import torch
    from torch.nn import functional as F

    H, W = region_shape
    wy, wx, wh, ww = window_box
    cy, cx, ch, cw = core_box
    device = src.device
    layers: list[_ScaleLayer | None] = []
    index_parts = []
    for si, sg in enumerate(grids):
        pad = sg.sample_pad(cell, out_stride)
        i0, i1 = sg.crop_range(cy, cy + ch, sg.ny, pad)
        j0, j1 = sg.crop_range(cx, cx + cw, sg.nx, pad)
        sel = np.ones((i1 - i0, j1 - j0), bool)
        if keep is not None:
            sel = np.asarray(keep[si][i0:i1, j0:j1], bool)
        if not sel.any():
            layers.append(None)
            continue
        # region px to resize: the crops' footprints plus the filter margin, inside the region
        y0 = max(0, i0 * sg.pitch - sg.margin) // sg.align * sg.align
        x0 = max(0, j0 * sg.pitch - sg.margin) // sg.align * sg.align
        y1 = min(H, (i1 - 1) * sg.pitch + sg.foot + sg.margin)
        x1 = min(W, (j1 - 1) * sg.pitch + sg.foot + sg.margin)
        if y0 < wy or x0 < wx or y1 > wy + wh or x1 > wx + ww:
            raise WsssError(f"the window {window_box} does not hold the crops of scale "
                            f"{sg.scale:g} (needs {y0}:{y1}, {x0}:{x1}); grow the halo")
        x = src[..., y0 - wy:y1 - wy, x0 - wx:x1 - wx].float()
        eff = sg.eff
        if sg.foot != crop:
            x = F.interpolate(x, scale_factor=eff, mode="bilinear", align_corners=False,
                              antialias=eff < 1, recompute_scale_factor=False)
        # scaled coordinates of the window's corner and of the first crop
        sy0, sx0 = round(y0 * eff), round(x0 * eff)
        py, px = i0 * stride - sy0, j0 * stride - sx0
        need_h = py + (i1 - i0 - 1) * stride + crop
        need_w = px + (j1 - j0 - 1) * stride + crop
        x = x[..., :need_h, :need_w]
        if x.shape[-2] < need_h or x.shape[-1] < need_w:
            x = F.pad(x, (0, need_w - x.shape[-1], 0, need_h - x.shape[-2]), value=PAD_VALUE)
        x = x[..., py:, px:]
        view = x.unfold(2, crop, stride).unfold(3, crop, stride)[0].permute(1, 2, 0, 3, 4)
        ch_ = ((i1 - i0 - 1) * stride + crop) // cell
        cw_ = ((j1 - j0 - 1) * stride + crop) // cell
        layers.append(_ScaleLayer(view, i0, j0, torch.zeros(n_cls, ch_, cw_, device=device),
                                  torch.zeros(1, ch_, cw_, device=device)))
        iy, ix = np.nonzero(sel)
        index_parts.append(np.stack([np.full_like(iy, si), iy, ix], 1))
    index = np.concatenate(index_parts) if index_parts else np.zeros((0, 3), np.int64)
    return layers, index


class _Blender:
    """Blends crop CAMs ``(n, C, k, k)`` into their scale's canvas with the window weight,
    and keeps the maximum class probability over the reference scale's crops."""

    def __init__(self, layers: list[_ScaleLayer | None], k: int, step: int, n_cls: int,
                 ref: int, device: Any) -> None:
        import torch

        from .predict import window_weight

        self.layers, self.k, self.step, self.n_cls, self.ref = layers, k, step, n_cls, ref
        self.device = device
        self.weight = torch.from_numpy(window_weight(k)).to(device)
        self.score_max = torch.zeros(n_cls, device=device)
        self.offs = torch.arange(k, device=device)

    def key(self, si: int, iy: int, ix: int) -> tuple[int, int, int]:
        """Global (scale, grid row, grid col) of scale ``si``'s local crop ``(iy, ix)``."""
        lay = self.layers[si]
        return si, lay.i0 + iy, lay.j0 + ix

    def add(self, si: int, sel: np.ndarray, cams: Any, logits: Any) -> None:
        """Blend the CAMs of scale ``si``'s crops ``sel`` (local rows, cols)."""
        import torch

        n, k, n_cls = len(sel), self.k, self.n_cls
        if si == self.ref:
            self.score_max = torch.maximum(self.score_max,
                                           torch.sigmoid(logits.float()).amax(0))
        lay = self.layers[si]
        iy = torch.as_tensor(sel[:, 0], device=self.device)
        ix = torch.as_tensor(sel[:, 1], device=self.device)
        wc = lay.sum.shape[-1]
        rows = (iy * self.step)[:, None, None] + self.offs[None, :, None]
        cols = (ix * self.step)[:, None, None] + self.offs[None, None, :]
        flat = (rows * wc + cols).reshape(-1)
        lay.sum.view(n_cls, -1).index_add_(
            1, flat, (cams * self.weight).permute(1, 0, 2, 3).reshape(n_cls, -1))
        lay.wsum.view(1, -1).index_add_(1, flat, self.weight.expand(n, k, k).reshape(1, -1))

    def blend_cached(self, index: np.ndarray, crop_cache: dict) -> np.ndarray:
        """Blend the crops a neighbouring tile already ran; the index of the others."""
        import torch

        hit = np.array([self.key(int(a), int(b), int(c)) in crop_cache for a, b, c in index])
        with torch.inference_mode():
            for si in np.unique(index[hit, 0]):
                sel = index[hit & (index[:, 0] == si)][:, 1:]
                got = [crop_cache[self.key(int(si), int(b), int(c))] for b, c in sel]
                self.add(int(si), sel, torch.stack([g[0] for g in got]),
                         torch.stack([g[1] for g in got]))
        return index[~hit]


def _run_crops(chunk: np.ndarray, *, model: Any, layers: list[_ScaleLayer | None],
               device: Any, amp: bool, needs_grad: bool, flip: bool) -> tuple[Any, Any]:
    """``(logits, cams)`` of the crops ``chunk`` (rows of scale, local row, local col)."""
    import torch

    parts = [layers[int(si)].view[torch.as_tensor(chunk[chunk[:, 0] == si][:, 1]),
                                  torch.as_tensor(chunk[chunk[:, 0] == si][:, 2])]
             for si in np.unique(chunk[:, 0])]
    batch = model.normalize(torch.cat(parts).to(device))
    batch = batch.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device.type, enabled=amp), \
            (torch.no_grad() if needs_grad else torch.inference_mode()):
        if flip:
            logits, cams = model.logits_and_cams(torch.cat([batch, batch.flip(-1)]))
            n = batch.shape[0]
            logits = (logits[:n] + logits[n:]) / 2
            cams = (cams[:n] + cams[n:].flip(-1)) / 2
        else:
            logits, cams = model.logits_and_cams(batch)
    return logits, cams


def _keep_for_later(crop_cache: dict, blender: _Blender, sg: ScaleGrid, si: int,
                    sel: np.ndarray, cams: Any, logits: Any, pad: int,
                    core_end: tuple[int, int]) -> None:
    """Cache the crops of scale ``si`` that reach past the core's bottom or right edge
    (``core_end`` = core's end row, end col minus ``pad``): a later tile blends them."""
    for (iy, ix), c, g in zip(sel, cams, logits, strict=True):
        kk = blender.key(int(si), int(iy), int(ix))
        if (kk[1] * sg.pitch + sg.foot > core_end[0] - pad
                or kk[2] * sg.pitch + sg.foot > core_end[1] - pad):
            crop_cache[kk] = (c.clone(), g.float().clone())


def _run_and_blend(index: np.ndarray, forward: Any, blender: _Blender, *, batch_size: int,
                   plan: Any, k: int, keep: Any) -> Generator[Any, None, None]:
    """Run the crops ``index`` in batches (several at once on the CPU plan's streams), blend
    their CAMs (resized to ``k x k``) and call ``keep(scale, sel, cams, logits)`` per scale
    of a batch; yields ``Progress`` after every batch."""
    import torch
    from torch.nn import functional as F

    from ..device import DEVICE_LOCK, torch_threads
    from ..progress import Progress

    total = len(index)
    streams = plan.streams if plan is not None else 1
    pool = None
    if streams > 1 and total > batch_size:
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(max_workers=streams, thread_name_prefix="wsss-cam")
    done = 0
    try:
        step = batch_size * (streams if pool is not None else 1)
        for b0 in range(0, total, step):
            chunks = [index[c0:c0 + batch_size]
                      for c0 in range(b0, min(b0 + step, total), batch_size)]
            with DEVICE_LOCK, torch_threads(plan):
                if pool is not None and len(chunks) > 1:
                    outs = list(pool.map(forward, chunks))
                else:
                    outs = [forward(c) for c in chunks]
            with torch.inference_mode(), torch_threads(plan):
                for chunk, (logits, cams) in zip(chunks, outs, strict=True):
                    cams = cams.float()
                    if cams.shape[-2:] != (k, k):
                        cams = F.interpolate(cams, size=(k, k), mode="bilinear",
                                             align_corners=False)
                    start = 0
                    for si in np.unique(chunk[:, 0]):
                        sel = chunk[chunk[:, 0] == si][:, 1:]
                        part, lg = cams[start:start + len(sel)], logits[start:start + len(sel)]
                        start += len(sel)
                        blender.add(int(si), sel, part, lg)
                        keep(int(si), sel, part, lg)
                    done += len(chunk)
            yield Progress("CAM crops", done, total)
    finally:
        if pool is not None:
            pool.shutdown(wait=True)


def _fuse_scales(grids: Sequence[ScaleGrid], layers: list[_ScaleLayer | None], *, n_cls: int,
                 out_shape: tuple[int, int], corner: tuple[int, int], cell: int,
                 out_stride: int, stride: int, device: Any, per_scale: list | None) -> Any:
    """The mean over scales of each scale's blended canvas, resampled to the output grid."""
    import torch

    oh, ow = out_shape
    fused = torch.zeros(n_cls, oh, ow, device=device)
    for sg, lay in zip(grids, layers, strict=True):
        if lay is None:  # no crop of this scale touches the core (glass)
            if per_scale is not None:
                per_scale.append(np.zeros((n_cls, oh, ow), np.float32))
            continue
        avg = torch.where(lay.wsum > 0, lay.sum / lay.wsum.clamp_min(1e-12), 0.0)
        up = _resample(avg, sg, cell, out_stride, corner, (oh, ow), (lay.i0, lay.j0), stride)
        fused += up
        if per_scale is not None:
            per_scale.append(up.cpu().numpy().astype(np.float32))
    fused /= len(grids)
    return fused


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
    import functools

    import torch

    from ..device import choose_device, cpu_plan, torch_threads

    img = _check_image(window)
    device = device if device is not None else choose_device(params.device)
    device = torch.device(device)
    prepare_model(model, device)
    crop, stride = crop_geometry(model, params)
    cy, cx, ch, cw = core_box
    if img.shape[:2] != tuple(window_box[2:]):
        raise WsssError(f"window pixels {img.shape[:2]} do not match the window box {window_box}")
    if cy % out_stride or cx % out_stride:
        raise WsssError(f"core box {core_box} must start on multiples of out_stride")
    grids = list(grids) if grids is not None else scale_grids(crop, stride, params.scales,
                                                              region_shape)
    oh, ow = -(-ch // out_stride), -(-cw // out_stride)
    n_cls = model.config.num_classes
    cuda = device.type == "cuda"
    cell = math.gcd(int(getattr(model, "stride", 1)) or 1, math.gcd(crop, stride))
    k = crop // cell
    ref = min(range(len(grids)), key=lambda i: abs(math.log(grids[i].eff)))

    plan = cpu_plan(params.threads) if device.type == "cpu" else None
    with torch_threads(plan):  # all CPU work of the call on the plan's threads
        src = torch.from_numpy(img if img.flags.writeable else img.copy())
        if cuda:
            src = src.pin_memory()
        src = src.to(device, non_blocking=True).permute(2, 0, 1)[None]  # (1, 3, h, w) uint8
        layers, index = _scale_layers(
            src, grids, keep, region_shape=region_shape, window_box=window_box,
            core_box=core_box, crop=crop, stride=stride, cell=cell, out_stride=out_stride,
            n_cls=n_cls)
        blender = _Blender(layers, k, stride // cell, n_cls, ref, device)
        if crop_cache is not None and len(index):
            index = blender.blend_cached(index, crop_cache)
    total = len(index)
    forward = functools.partial(
        _run_crops, model=model, layers=layers, device=device, amp=bool(params.amp and cuda),
        needs_grad=bool(getattr(model, "needs_grad", False)), flip=params.flip)

    def keep_later(si: int, sel: np.ndarray, cams: Any, logits: Any) -> None:
        if crop_cache is not None:  # keep what a later tile will need
            _keep_for_later(crop_cache, blender, grids[si], si, sel, cams, logits,
                            grids[si].sample_pad(cell, out_stride), (cy + ch, cx + cw))

    yield from _run_and_blend(index, forward, blender, batch_size=params.batch_size, plan=plan,
                              k=k, keep=keep_later)

    with torch.inference_mode(), torch_threads(plan):
        fused = _fuse_scales(grids, layers, n_cls=n_cls, out_shape=(oh, ow), corner=(cy, cx),
                             cell=cell, out_stride=out_stride, stride=stride, device=device,
                             per_scale=per_scale)
    return (fused.cpu().numpy().astype(np.float32),
            blender.score_max.cpu().numpy().astype(np.float32), total)


def evict_crops(crop_cache: dict, grids: Sequence[ScaleGrid], row_start: int) -> None:
    """Drop cached crops that no tile starting at region row ``row_start`` (or later) uses."""
    first = [sg.crop_range(row_start, row_start + 1, sg.ny, sg.foot)[0] for sg in grids]
    for kk in [kk for kk in crop_cache if kk[1] < first[kk[0]]]:
        del crop_cache[kk]


def _resample(avg: Any, sg: ScaleGrid, cell: int, out_stride: int, corner: tuple[int, int],
              out_shape: tuple[int, int], first: tuple[int, int], stride: int) -> Any:
    """Bilinear samples of a scale's canvas at the centres of the output pixels, in global
    coordinates (so a tile samples exactly where the whole region would)."""
    import torch

    out = avg
    for axis, (c0, n_out, i0) in enumerate(zip(corner, out_shape, first, strict=True)):
        n_in = avg.shape[1 + axis]
        r = torch.arange(n_out, dtype=torch.float64, device=avg.device) + c0 // out_stride
        u = ((r + 0.5) * out_stride * sg.eff - i0 * stride) / cell - 0.5
        u = u.clamp(0, n_in - 1)
        lo = u.floor().long().clamp(max=n_in - 1)
        hi = (lo + 1).clamp(max=n_in - 1)
        f = (u - lo).float()
        dim = 1 + axis
        shape = [1, 1, 1]
        shape[dim] = n_out
        f = f.view(shape)
        out = out.index_select(dim, lo) * (1 - f) + out.index_select(dim, hi) * f
    return out
