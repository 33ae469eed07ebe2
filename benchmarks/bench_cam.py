"""Benchmark of CAM inference: batched multi-scale crops vs a naive per-crop loop, and the
peak memory of whole-slide CAMs on a generated 40,000 x 40,000 slide.

    python benchmarks/bench_cam.py                     # CPU: batched vs naive, + pure model
    python benchmarks/bench_cam.py --slide-rss         # + peak RSS on a 40k x 40k slide
    python benchmarks/bench_cam.py --device cuda       # GPU: batched vs pure model throughput

Baselines, measured in the same run on the same crops and the same timm model:
* naive: one crop at a time (resize with OpenCV, normalise in numpy, forward, CAM upsampled
  with OpenCV and stitched into numpy sum/count canvases);
* pure model: ``model.logits_and_cams`` on a ready, normalised device tensor of the same
  number of crops (the limit: no resizing, cropping or stitching).
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np


def naive_multiscale(model, image, scales, crop, stride):
    """Reference implementation: a Python loop over crops, numpy stitching."""
    import cv2
    import torch

    h, w = image.shape[:2]
    mean = np.asarray(model.config.mean, np.float32) * 255
    std = np.asarray(model.config.std, np.float32) * 255
    fused = np.zeros((model.config.num_classes, h, w), np.float32)
    n = 0
    for s in scales:
        hs, ws = max(1, round(h * s)), max(1, round(w * s))
        img = cv2.resize(image, (ws, hs), interpolation=cv2.INTER_AREA if s < 1 else
                         cv2.INTER_LINEAR)
        ny = 1 + max(0, math.ceil((hs - crop) / stride))
        nx = 1 + max(0, math.ceil((ws - crop) / stride))
        hp, wp = crop + (ny - 1) * stride, crop + (nx - 1) * stride
        pad = np.full((hp, wp, 3), 255, np.uint8)
        pad[:hs, :ws] = img
        acc = np.zeros((model.config.num_classes, hp, wp), np.float32)
        cnt = np.zeros((hp, wp), np.float32)
        for iy in range(ny):
            for ix in range(nx):
                y, x = iy * stride, ix * stride
                c = (pad[y:y + crop, x:x + crop].astype(np.float32) - mean) / std
                t = torch.from_numpy(c.transpose(2, 0, 1).copy())[None]
                with torch.inference_mode():
                    _, cams = model.logits_and_cams(t)
                cams = cams[0].numpy()
                for k in range(cams.shape[0]):
                    acc[k, y:y + crop, x:x + crop] += cv2.resize(cams[k], (crop, crop))
                cnt[y:y + crop, x:x + crop] += 1
                n += 1
        avg = acc / np.maximum(cnt, 1)
        for k in range(avg.shape[0]):
            fused[k] += cv2.resize(avg[k, :hs, :ws], (w, h))
    fused /= len(scales)
    peak = fused.reshape(fused.shape[0], -1).max(1)
    return fused / np.maximum(peak, 1e-5)[:, None, None], n


def pure_model(model, n_crops, crop, batch, device, amp):
    import torch

    x = torch.randn(batch, 3, crop, crop, device=device)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    done = 0
    sync = (lambda: torch.cuda.synchronize()) if device.type == "cuda" else (lambda: None)
    with torch.inference_mode(), torch.autocast(device.type, enabled=amp):
        model.logits_and_cams(x)
        sync()
        t = time.perf_counter()
        while done < n_crops:
            model.logits_and_cams(x)
            done += batch
        sync()
    return done / (time.perf_counter() - t)


def bench_crops(args) -> None:
    import torch

    from wsss_napari.device import choose_device
    from wsss_napari.inference.multiscale import crop_geometry, iter_raw_cams, multiscale_cam
    from wsss_napari.models.config import ModelConfig
    from wsss_napari.models.registry import build_model
    from wsss_napari.params import CamParams
    from wsss_napari.progress import run_to_end
    from wsss_napari.sample.synth import make_tissue

    device = choose_device(args.device)
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone=args.backbone, input_size=args.crop)).eval()
    image, _ = make_tissue(args.size, args.size, seed=3)
    params = CamParams(scales=tuple(args.scales), batch_size=args.batch, device=str(device))
    crop, stride = crop_geometry(model, params)
    # warm-up and crop count
    gen = iter_raw_cams(model, image, params.replace(scales=(1.0,)), device=device)
    run_to_end(gen)
    sync = (lambda: torch.cuda.synchronize()) if device.type == "cuda" else (lambda: None)
    t = time.perf_counter()
    res = multiscale_cam(model, image, params, device=device)
    sync()
    t_ours = time.perf_counter() - t
    n = sum((1 + max(0, math.ceil((round(args.size * s) - crop) / stride))) ** 2
            for s in params.scales)
    print(f"device {device}, backbone {args.backbone}, image {args.size}^2, crop {crop}, "
          f"stride {stride}, scales {params.scales}, {n} crops")
    ours = n / t_ours
    print(f"  ours (batched, all scales together): {ours:8.1f} crops/s  ({t_ours:.2f} s)")
    limit = pure_model(model, max(n, 4 * args.batch), crop, args.batch, device,
                       params.amp and device.type == "cuda")
    print(f"  pure model throughput (limit):       {limit:8.1f} crops/s  "
          f"-> ours = {ours / limit:.2f} x limit")
    if device.type == "cpu" and not args.no_naive:
        model.cpu()
        t = time.perf_counter()
        ref, n2 = naive_multiscale(model, image, params.scales, crop, stride)
        t_naive = time.perf_counter() - t
        assert n2 == n, (n2, n)
        diff = float(np.abs(ref - res.cams).mean())
        print(f"  naive loop (one crop at a time):     {n / t_naive:8.1f} crops/s  "
              f"({t_naive:.2f} s) -> ours = {t_naive / t_ours:.2f} x naive "
              f"(mean |CAM difference| {diff:.4f})")


def bench_slide_rss(args) -> None:
    """Peak RSS of slide_cams over a generated 40k x 40k slide (the first K tiles)."""
    import torch

    from wsss_napari.inference.slide_cam import slide_cams
    from wsss_napari.io.slide import Slide
    from wsss_napari.models.config import ModelConfig
    from wsss_napari.models.registry import build_model
    from wsss_napari.params import CamParams
    from wsss_napari.sample.synth import write_pyramidal_tiff

    path = Path(args.slide_path)
    if not path.is_file():
        t = time.perf_counter()
        write_pyramidal_tiff(path, args.slide_size, args.slide_size, seed=0, mpp=0.5)
        print(f"wrote {path} ({path.stat().st_size / 1e9:.2f} GB) in "
              f"{time.perf_counter() - t:.0f} s")
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone=args.backbone, input_size=args.crop, mpp=1.0))
    params = CamParams(scales=tuple(args.scales), batch_size=args.batch, device=args.device)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    with Slide.open(path) as slide:
        gen = slide_cams(slide, model, params, cache_dir=args.cache)
        first = next(gen)
        for p in gen:
            if p.info.get("computed", 0) >= args.tiles and "crops" not in p.info:
                break
        gen.close()
    dt = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"slide {args.slide_size}^2 at 0.5 um/px, model at 1.0 um/px (level 1): "
          f"{first.total} tiles of {params.tile_size}^2, {first.info['glass']} glass; "
          f"processed {p.info.get('computed')} tiles in {dt:.0f} s "
          f"({p.info.get('tiles/s')} tiles/s); peak RSS {rss:.0f} MB (before: {rss0:.0f} MB)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--crop", type=int, default=224)
    ap.add_argument("--size", type=int, default=448, help="test image edge (px)")
    ap.add_argument("--scales", type=float, nargs="+", default=[0.5, 1.0, 1.5])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-naive", action="store_true")
    ap.add_argument("--slide-rss", action="store_true")
    ap.add_argument("--only-slide", action="store_true", help="skip the crops benchmark")
    ap.add_argument("--slide-size", type=int, default=40_000)
    ap.add_argument("--slide-path", default="/tmp/wsss_bench_40k.tif")
    ap.add_argument("--tiles", type=int, default=3, help="tiles to process for the RSS run")
    ap.add_argument("--cache", default="/tmp/wsss_bench_cache")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    if not args.only_slide:
        bench_crops(args)
    if args.slide_rss or args.only_slide:
        bench_slide_rss(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
