"""Held-out accuracy against time of the CAM settings, to choose the CPU defaults (issue 14).

Uses the 3-fold classifiers of ``bench_weak_labels.py --work DIR`` (``DIR/fold{0,1,2}/
cam.safetensors``; the folds split the 31 WSSS4LUAD validation images by ``index % 3``, as
there). For each fold and each crop grid (crop stride, output stride) the CAMs of all 31
images are computed once at every scale that grid's scale sets use, keeping each scale's
raw maps; a scale set's CAMs are then the mean of its scales' raw maps divided by the per-class
maximum, which is exactly what ``multiscale_cam`` computes for that set (one crop grid per
scale, scales averaged; the scores come from the scale nearest 1, which every set here
contains; checked against a direct run on one image per fold). Per setting:

* CAM argmax -- on the fold's test images, background mask given;
* CAM + post tuned -- ``tune.grid_search`` (``default_grid``, from the defaults) on the
  fold's *training* images' masks, applied to its test images;
* time -- wall time of ``iter_raw_cams`` with exactly that setting on the 11 test images of
  fold 0 (``CamParams`` defaults otherwise: all cores as single-threaded streams).

mIoU is the challenge's (tumor / stroma / normal, confusion matrices summed over the test
images of all folds), as in ``bench_weak_labels.py``.

    python benchmarks/bench_cam_defaults.py --work /tmp/h16bench/lite0   # ~12 min, 2 cores
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "wsss4luad" / "validation"
ALL = (0.5, 0.75, 1.0, 1.5, 2.0)
#: (crop stride in px, 0 = half the crop; output stride) -> the scale sets measured on it
GRIDS = {
    (0, 1): [(1.0,), (1.0, 1.5), (0.75, 1.0), (0.75, 1.0, 1.5), (0.5, 1.0, 1.5), ALL],
    (96, 1): [(1.0,), (0.75, 1.0, 1.5), ALL],
    (0, 4): [(0.75, 1.0, 1.5)],
}


def _conf(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    from wsss_napari.metrics import confusion_matrix, force_background

    return confusion_matrix(force_background(pred, gt == 3), gt)


def _raw_scales(model, rgb: np.ndarray, scales: tuple[float, ...], stride: int,
                out_stride: int):
    """Each of ``scales``: raw maps at image resolution ``{scale: (C, H, W)}``, and scores."""
    import torch
    from torch.nn import functional as F

    from wsss_napari.inference.multiscale import iter_raw_cams
    from wsss_napari.params import CamParams
    from wsss_napari.progress import run_to_end

    per: list = []
    _, scores = run_to_end(iter_raw_cams(model, rgb, CamParams(scales=scales, stride=stride),
                                         out_stride=out_stride, per_scale=per))
    maps = np.stack(per)
    if out_stride != 1:  # upsample the coarse maps as bench_cam_accuracy.py does
        maps = F.interpolate(torch.from_numpy(maps), scale_factor=out_stride,
                             mode="bilinear", align_corners=False).numpy()
        maps = maps[..., :rgb.shape[0], :rgb.shape[1]]
    return dict(zip(scales, maps, strict=True)), scores


def _subset_cams(maps: dict, scales: tuple[float, ...]) -> np.ndarray:
    from wsss_napari.inference.multiscale import normalize_cams

    raw = np.mean([maps[s] for s in scales], axis=0)
    return normalize_cams(raw, raw.reshape(raw.shape[0], -1).max(1))


def _check_subsets(model, rgb: np.ndarray, maps: dict) -> float:
    """Largest difference between a derived scale set's CAMs and a direct run."""
    from wsss_napari.inference.multiscale import multiscale_cam
    from wsss_napari.params import CamParams

    direct = multiscale_cam(model, rgb, CamParams(scales=(0.75, 1.0, 1.5))).cams
    return float(np.abs(direct - _subset_cams(maps, (0.75, 1.0, 1.5))).max())


def run_fold(fold: int, images: list, args, confs: dict) -> None:
    from wsss_napari.models.checkpoint import load_model
    from wsss_napari.params import PostprocParams
    from wsss_napari.postproc import postprocess
    from wsss_napari.progress import run_to_end
    from wsss_napari.tune import TuneSample, default_grid, grid_search

    model = load_model(args.work / f"fold{fold}" / "cam.safetensors")
    test = [i for i in range(len(images)) if i % 3 == fold]
    for (stride, out_stride), sets in GRIDS.items():
        t = time.perf_counter()
        needed = tuple(sorted({s for scales in sets for s in scales}))
        per = [_raw_scales(model, rgb, needed, stride, out_stride) for _, rgb, _ in images]
        if (stride, out_stride) == (0, 1):
            diff = _check_subsets(model, images[test[0]][1], per[test[0]][0])
            print(f"fold {fold}: derived vs direct (0.75, 1, 1.5) max diff {diff:.2e}",
                  flush=True)
        print(f"fold {fold}: stride {stride or 'crop/2'}, out stride {out_stride}: "
              f"CAMs at scales {needed} of {len(images)} images in "
              f"{time.perf_counter() - t:.0f} s",
              flush=True)
        for scales in sets:
            cams = [_subset_cams(m, scales) for m, _ in per]
            samples = [TuneSample(cams=cams[i], gt=gt, image=rgb, scores=per[i][1],
                                  background=gt == 3, name=name)
                       for i, (name, rgb, gt) in enumerate(images) if i % 3 != fold]
            tuned = run_to_end(grid_search(samples, default_grid(), base=PostprocParams()))
            key = (scales, stride, out_stride)
            c = confs.setdefault(key, {"argmax": np.zeros((4, 4), np.int64),
                                       "tuned": np.zeros((4, 4), np.int64)})
            for i in test:
                _, rgb, gt = images[i]
                c["argmax"] += _conf(cams[i].argmax(0).astype(np.uint8), gt)
                c["tuned"] += _conf(postprocess(cams[i], tuned.best, image=rgb,
                                                scores=per[i][1], background=gt == 3), gt)


def time_settings(images: list, keys: list, work: Path) -> dict:
    """Wall seconds of each setting's CAMs of fold 0's test images (default model threads)."""
    from wsss_napari.inference.multiscale import iter_raw_cams
    from wsss_napari.models.checkpoint import load_model
    from wsss_napari.params import CamParams
    from wsss_napari.progress import run_to_end

    model = load_model(work / "fold0" / "cam.safetensors")
    test = [rgb for i, (_, rgb, _) in enumerate(images) if i % 3 == 0]
    run_to_end(iter_raw_cams(model, test[0], CamParams(scales=(1.0,))))  # warm-up
    out = {}
    for scales, stride, out_stride in keys:
        params = CamParams(scales=scales, stride=stride)
        t = time.perf_counter()
        for rgb in test:
            run_to_end(iter_raw_cams(model, rgb, params, out_stride=out_stride))
        out[(scales, stride, out_stride)] = time.perf_counter() - t
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, required=True,
                    help="bench_weak_labels.py --work folder with fold*/cam.safetensors")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--limit", type=int, default=0, help="first N images only (smoke run)")
    args = ap.parse_args(argv)
    from wsss_napari.metrics import iou_report
    from wsss_napari.train.data import load_mask, load_rgb

    paths = sorted((args.data / "img").glob("*.png"))[:args.limit or None]
    if not paths:
        sys.exit(f"no images in {args.data / 'img'}")
    images = [(p.stem, load_rgb(p), load_mask(args.data / "mask" / p.name)) for p in paths]
    t0 = time.perf_counter()
    confs: dict = {}
    for fold in args.folds:
        run_fold(fold, images, args, confs)
    times = time_settings(images, list(confs), args.work)
    print(f"\n{len(images)} images, folds {args.folds}, {(time.perf_counter() - t0) / 60:.1f} "
          "min\n\n| scales | crop stride | out stride | CAM argmax mIoU | CAM + post tuned "
          "mIoU | tuned tumor / stroma / normal | time, fold 0 test images (s) |\n"
          "|---|---|---|---|---|---|---|")
    for (scales, stride, out_stride), c in confs.items():
        a, tu = iou_report(c["argmax"]), iou_report(c["tuned"])
        per_class = " / ".join(f"{tu['iou'][k]:.3f}" for k in ("tumor", "stroma", "normal"))
        print(f"| {', '.join(f'{s:g}' for s in scales)} | {stride or 'crop/2'} | "
              f"{out_stride} | {a['miou']:.3f} | {tu['miou']:.3f} | "
              f"{per_class} | "
              f"{times[(scales, stride, out_stride)]:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
