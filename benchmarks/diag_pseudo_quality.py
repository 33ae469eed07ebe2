"""How good are stage 2's training labels? Pseudo-masks of a bench_weak_labels run scored
against the training images' own masks.

A diagnosis, not a benchmark row: the masks of training images are never a training label,
but they say where the pipeline loses. Stage 2 cannot learn a separation its pseudo-masks
do not contain, so this is roughly its ceiling. ``--mixed`` scores only the patches
labelled with two or more classes, on tissue pixels only (the background mask given): how
well the CAMs separate the classes a patch is known to hold, the hard part of the task.

    python benchmarks/bench_weak_labels.py ... --work /tmp/w        # makes the pseudo-masks
    python benchmarks/diag_pseudo_quality.py /tmp/w [--tag _ex] [--mixed]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_weak_labels import DEFAULT_DATA, _conf, fold_of, load_images  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    from wsss_napari.metrics import iou_report
    from wsss_napari.train.data import load_mask
    from wsss_napari.train.weak import cut_weak_patches

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("work", type=Path, help="a bench_weak_labels --work folder")
    ap.add_argument("--tag", default="", help="the run's --pseudo-tag (pseudo<TAG>/)")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--patch", type=int, default=128)
    ap.add_argument("--stride", type=int, default=64)
    ap.add_argument("--min-fraction", type=float, default=0.02)
    ap.add_argument("--max-background", type=float, default=0.8)
    ap.add_argument("--split", choices=("stratified", "mod3"), default="stratified")
    ap.add_argument("--mixed", action="store_true",
                    help="only patches with two or more labels")
    args = ap.parse_args(argv)
    if not (args.data / "img").is_dir():
        print(f"WSSS4LUAD validation data not found at {args.data}; skipping")
        return 0
    images = load_images(args.data)
    folds = fold_of([gt for _, _, gt in images], args.split)
    total = np.zeros((4, 4), np.int64)
    for fold in sorted(set(folds)):
        mask_dir = args.work / f"fold{fold}" / f"pseudo{args.tag}"
        files = sorted(mask_dir.glob("*.png"))
        if not files:
            continue
        # the benchmark's patches, in its order (file names are the running index)
        truth = [(gt[y:y + args.patch, x:x + args.patch], lab)
                 for (_, rgb, gt), f in zip(images, folds, strict=True) if f != fold
                 for y, x, _, lab in cut_weak_patches(rgb, gt, args.patch, args.stride,
                                                      args.min_fraction, args.max_background)]
        if len(truth) != len(files):
            sys.exit(f"{mask_dir}: {len(files)} masks for {len(truth)} patches; other "
                     "--patch / --stride / --split than the run?")
        conf = np.zeros((4, 4), np.int64)
        for (gt, lab), f in zip(truth, files, strict=True):
            if args.mixed and lab.sum() < 2:
                continue
            conf += _conf(load_mask(f), gt)
        total += conf
        r = iou_report(conf)
        print(f"fold {fold}: {len(files)} patches, mIoU {r['miou']:.3f} "
              f"({', '.join(f'{k} {v:.3f}' for k, v in r['iou'].items())})")
    r = iou_report(total)
    print(f"pooled{' (mixed patches)' if args.mixed else ''}: mIoU {r['miou']:.3f} "
          f"({', '.join(f'{k} {v:.3f}' for k, v in r['iou'].items())})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
