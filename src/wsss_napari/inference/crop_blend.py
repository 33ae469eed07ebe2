"""The crop machinery of :func:`.multiscale.iter_window_cams`: cut each scale's crops as
views of the resized window, run them in batches, blend their CAMs into per-scale canvases
with the window weight, keep crops a later tile shares, and fuse the scales on the output
grid (see :mod:`.multiscale` for the method and its one-grid-per-region rule)."""

from __future__ import annotations

import math
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import WsssError

if TYPE_CHECKING:
    from .multiscale import ScaleGrid

#: Pixels outside the image (padding) are white: glass, the neutral background of H&E.
PAD_VALUE = 255.0


@dataclass

class _ScaleLayer:
    """One scale's crops that touch the core: their views and the blending canvas."""

    view: Any  # (rows, cols, 3, crop, crop) views of the resized, normalised window (NHWC)
    i0: int  # grid row / column of view[0, 0]
    j0: int
    sum: Any  # (C, h, w) weighted CAM sum at CAM resolution
    wsum: Any  # (1, h, w) sum of weights


def _scale_layers(src: Any, grids: Sequence[ScaleGrid], keep: Sequence[np.ndarray] | None, *,
                  pool: Any = None, **kw: Any) -> tuple[list[_ScaleLayer | None], np.ndarray]:
    """Per scale, the crops that touch the core (None where none is kept), cut as views of
    the resized window; and the index ``(n, 3)`` of (scale, local row, local col) to run.

    The scales are prepared concurrently on ``pool`` (the CPU plan's streams; resizing the
    window to scale 2 is the largest piece of work of a tile outside the network); ``kw``
    as :func:`_scale_layer`."""
    import functools

    one = functools.partial(_scale_layer, src, keep=keep, **kw)
    order = sorted(range(len(grids)), key=lambda i: -grids[i].eff)  # largest first
    done = dict(zip(order, (pool.map if pool is not None else map)(
        one, order, [grids[i] for i in order]), strict=True))
    layers = [done[i][0] for i in range(len(grids))]
    parts = [done[i][1] for i in range(len(grids)) if done[i][1] is not None]
    return layers, (np.concatenate(parts) if parts else np.zeros((0, 3), np.int64))


def _scale_layer(src: Any, si: int, sg: ScaleGrid, *, keep: Sequence[np.ndarray] | None,
                 region_shape: tuple[int, int], window_box: tuple[int, int, int, int],
                 core_box: tuple[int, int, int, int], crop: int, stride: int, cell: int,
                 out_stride: int, n_cls: int, white: Any
                 ) -> tuple[_ScaleLayer | None, np.ndarray | None]:
    """Scale ``si``'s crops that touch the core as views of the window resized to that
    scale, and their rows of the crop index (``(None, None)`` when none is kept).

    ``src`` is the window already normalised (the model's per-channel scaling, once per
    window: resampling commutes with it, and the five default scales hold 8x the window's
    pixels); ``white`` ``(1, 3, 1, 1)`` is white normalised, the padding. The resized
    window is kept channels_last, so a batch is one gather of ready network input: crops
    overlap, and normalising each crop, then copying it to channels_last, cost more than
    the gather (issue 14)."""
    import torch

    H, W = region_shape
    wy, wx, wh, ww = window_box
    cy, cx, ch, cw = core_box
    pad = sg.sample_pad(cell, out_stride)
    i0, i1 = sg.crop_range(cy, cy + ch, sg.ny, pad)
    j0, j1 = sg.crop_range(cx, cx + cw, sg.nx, pad)
    sel = np.ones((i1 - i0, j1 - j0), bool)
    if keep is not None:
        sel = np.asarray(keep[si][i0:i1, j0:j1], bool)
    if not sel.any():
        return None, None
    # region px to resize: the crops' footprints plus the filter margin, inside the region
    y0 = max(0, i0 * sg.pitch - sg.margin) // sg.align * sg.align
    x0 = max(0, j0 * sg.pitch - sg.margin) // sg.align * sg.align
    y1 = min(H, (i1 - 1) * sg.pitch + sg.foot + sg.margin)
    x1 = min(W, (j1 - 1) * sg.pitch + sg.foot + sg.margin)
    if y0 < wy or x0 < wx or y1 > wy + wh or x1 > wx + ww:
        raise WsssError(f"the window {window_box} does not hold the crops of scale "
                        f"{sg.scale:g} (needs {y0}:{y1}, {x0}:{x1}); grow the halo")
    x = src[..., y0 - wy:y1 - wy, x0 - wx:x1 - wx]
    eff = sg.eff
    if sg.foot != crop:
        x = _resize(x, eff)
    # scaled coordinates of the window's corner and of the first crop
    sy0, sx0 = round(y0 * eff), round(x0 * eff)
    py, px = i0 * stride - sy0, j0 * stride - sx0
    nh, nw = (i1 - i0 - 1) * stride + crop, (j1 - j0 - 1) * stride + crop  # crops' extent
    x = x[..., py:py + nh, px:px + nw]
    if tuple(x.shape[-2:]) == (nh, nw):  # channels_last pixels (a view where they are)
        x = x if x.stride(1) == 1 else x.contiguous(memory_format=torch.channels_last)
    else:  # the crops reach beyond the region: white there
        padded = white.expand(1, 3, nh, nw).contiguous(memory_format=torch.channels_last)
        padded[..., :x.shape[-2], :x.shape[-1]] = x
        x = padded
    view = x.unfold(2, crop, stride).unfold(3, crop, stride)[0].permute(1, 2, 0, 3, 4)
    layer = _ScaleLayer(view, i0, j0, torch.zeros(n_cls, nh // cell, nw // cell,
                                                  device=src.device),
                        torch.zeros(1, nh // cell, nw // cell, device=src.device))
    iy, ix = np.nonzero(sel)
    return layer, np.stack([np.full_like(iy, si), iy, ix], 1)


def _resize(x: Any, eff: float) -> Any:
    """``x`` ``(1, 3, h, w)`` resized by ``eff``: bilinear (half-pixel centres, edges
    clamped), antialiased when shrinking. Enlarging on the CPU uses OpenCV on the
    channels_last pixels (the same mapping, 5x faster than ``F.interpolate`` here, and its
    output is channels_last already); shrinking and GPUs use ``F.interpolate``."""
    from torch.nn import functional as F

    if eff > 1 and x.device.type == "cpu" and x.stride(1) == 1 and x.stride(3) == 3:
        import cv2
        import torch

        big = cv2.resize(x[0].permute(1, 2, 0).numpy(), (0, 0), fx=eff, fy=eff,
                         interpolation=cv2.INTER_LINEAR)
        h, w = math.floor(x.shape[-2] * eff), math.floor(x.shape[-1] * eff)  # as torch:
        return torch.from_numpy(big).permute(2, 0, 1)[None, :, :h, :w]  # beyond is white
    return F.interpolate(x, scale_factor=eff, mode="bilinear", align_corners=False,
                         antialias=eff < 1, recompute_scale_factor=False)


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
             for si in np.unique(chunk[:, 0])]  # gathers of normalised NHWC crops
    batch = parts[0] if len(parts) == 1 else torch.cat(parts)
    batch = batch.contiguous(memory_format=torch.channels_last)  # a no-op: already NHWC
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
    of a batch; yields ``Progress`` after every batch.

    A step gives each stream one batch of ``batch_size``; the last step of a window splits
    what is left evenly over the streams (before, one stream sat idle while the other ran
    the window's last batch)."""
    import torch
    from torch.nn import functional as F

    from ..device import DEVICE_LOCK, torch_threads
    from ..progress import Progress

    total = len(index)
    streams = plan.streams if plan is not None else 1
    pool = None
    if streams > 1 and total > 1:
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(max_workers=streams, thread_name_prefix="wsss-cam")
    done = 0
    try:
        step = batch_size * (streams if pool is not None else 1)
        for b0 in range(0, total, step):
            n = min(step, total - b0)
            parts = min(streams, n) if pool is not None else 1
            chunks = np.array_split(index[b0:b0 + n], parts)  # equal batches (last step)
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
