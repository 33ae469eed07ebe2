"""Accuracy against time of the CAM settings, to choose the CPU defaults.

For each setting (scales, crop stride, output stride), the default model's CAMs of the 31
WSSS4LUAD validation images (``../shared/data/wsss4luad/validation``), argmax over tumor /
stroma / normal with the background mask given, against the pixel masks: the challenge's
mIoU (confusion matrices summed over all images), and the wall time of the CAMs.

    python benchmarks/bench_cam_accuracy.py            # ~4 min on 2 shared CPU cores
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "wsss4luad" / "validation"
SETTINGS = [  # (scales, stride; 0 = half the crop, out_stride)
    ((1.0,), 0, 1),
    ((0.5, 1.0, 1.5), 0, 1),
    ((0.75, 1.0, 1.5), 0, 1),
    ((0.5, 0.75, 1.0, 1.5, 2.0), 0, 1),
    ((0.5, 0.75, 1.0, 1.5, 2.0), 168, 1),
    ((0.5, 0.75, 1.0, 1.5, 2.0), 0, 4),
]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--limit", type=int, default=0, help="first N images only")
    args = ap.parse_args(argv)
    import torch
    from torch.nn import functional as F

    from wsss_napari.inference.multiscale import iter_raw_cams
    from wsss_napari.metrics import confusion_matrix, iou_per_class
    from wsss_napari.models.checkpoint import load_model
    from wsss_napari.params import CamParams
    from wsss_napari.progress import run_to_end
    from wsss_napari.train.data import load_mask, load_rgb

    root = Path(args.data)
    paths = sorted((root / "img").glob("*.png"))[:args.limit or None]
    if not paths:
        sys.exit(f"no images in {root / 'img'}")
    images = [(load_rgb(p), load_mask(root / "mask" / p.name)) for p in paths]
    model = load_model("default")
    print(f"{len(images)} images, default model ({model.config.backbone}), "  # noqa: T201
          f"{torch.get_num_threads()} torch threads\n")
    print("| scales | crop stride | out stride | mIoU | tumor / stroma / normal IoU | "  # noqa: T201
          "time (s) |\n|---|---|---|---|---|---|")
    for scales, stride, out_stride in SETTINGS:
        params = CamParams(scales=scales, stride=stride)
        conf = np.zeros((4, 4), np.int64)
        t = time.perf_counter()
        for rgb, gt in images:
            raw, _ = run_to_end(iter_raw_cams(model, rgb, params, out_stride=out_stride))
            if out_stride != 1:
                raw = F.interpolate(torch.from_numpy(raw)[None], scale_factor=out_stride,
                                    mode="bilinear", align_corners=False)[0].numpy()
                raw = raw[:, :rgb.shape[0], :rgb.shape[1]]
            pred = np.argmax(raw, axis=0).astype(np.uint8)
            pred[gt == 3] = 3  # the background mask is given
            conf += confusion_matrix(pred, gt)
        dt = time.perf_counter() - t
        iou = iou_per_class(conf)[:3]
        print(f"| {', '.join(f'{s:g}' for s in scales)} | {stride or 'crop/2'} | "  # noqa: T201
              f"{out_stride} | {np.nanmean(iou):.3f} | "
              f"{' / '.join(f'{v:.3f}' for v in iou)} | {dt:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
