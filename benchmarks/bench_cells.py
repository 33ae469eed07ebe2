"""Per-cell labels on the WSSS4LUAD validation images: the class of each detected nucleus
against the ground-truth mask class under its centroid (accuracy per class), and nuclei/s.

    python benchmarks/bench_cells.py                      # default model + oracle CAMs
    python benchmarks/bench_cells.py --model cam.safetensors
    python benchmarks/bench_cells.py --folds-work /tmp/h16bench/lite0 --scales 0.75 1 1.5

``--folds-work DIR`` makes the model row held out: image ``i`` gets the CAMs of
``DIR/fold{i % 3}/cam.safetensors``, the classifier of the 3-fold weak-label benchmark
(``bench_weak_labels.py``) that never saw it (the default model was trained on these images).

Two CAM sources, same nuclei:
* ``oracle``: one-hot ground-truth masks used as CAMs (upper bound: what the nucleus
  segmentation and the CAM read-out lose by themselves, e.g. nuclei on class borders);
* ``model``: the model's multi-scale CAMs of the image (scales 1.0 unless --scales).
Nuclei/s counts the built-in nucleus segmentation + classification only (CAMs excluded).
Cells whose centroid lies on background (mask 3) are counted apart.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
VAL = ROOT.parent / "shared" / "data" / "wsss4luad" / "validation"


def main(argv: list[str] | None = None) -> int:
    from PIL import Image

    from wsss_napari.cells import collect_cells
    from wsss_napari.classes import CLASS_NAMES
    from wsss_napari.inference.multiscale import multiscale_cam
    from wsss_napari.io.slide import Slide
    from wsss_napari.models.checkpoint import load_model
    from wsss_napari.params import CamParams, CellParams
    from wsss_napari.progress import run_to_end

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--scales", type=float, nargs="+", default=[1.0])
    ap.add_argument("--val", default=str(VAL))
    ap.add_argument("--folds-work", type=Path,
                    help="held out: image i uses DIR/fold{i %% 3}/cam.safetensors")
    args = ap.parse_args(argv)
    val = Path(args.val)
    if not (val / "img").is_dir():
        print(f"no validation images at {val}", file=sys.stderr)  # noqa: T201
        return 1
    if args.folds_work:
        models = [load_model(args.folds_work / f"fold{k}" / "cam.safetensors") for k in range(3)]
    else:
        models = [load_model(args.model)]
    n_cls = len(CLASS_NAMES)
    conf = {src: np.zeros((n_cls + 1, n_cls), np.int64) for src in ("oracle", "model")}
    n_cells, seconds = 0, 0.0
    params = CellParams()
    for i, img_path in enumerate(sorted((val / "img").glob("*.png"))):
        model = models[i % len(models)]
        rgb = np.asarray(Image.open(img_path).convert("RGB"))
        mask = np.asarray(Image.open(val / "mask" / img_path.name))
        slide = Slide.from_arrays([rgb], name=img_path.stem)
        onehot = np.stack([(mask == c).astype(np.float32) for c in range(n_cls)])
        cams_model = multiscale_cam(model, rgb, CamParams(scales=tuple(args.scales),
                                                          device="cpu")).cams
        for src, cams in (("oracle", onehot), ("model", cams_model)):
            store = SimpleNamespace(cams=cams, downsample=1.0, origin=(0.0, 0.0),
                                    class_names=CLASS_NAMES)
            t0 = time.perf_counter()
            table, _ = run_to_end(collect_cells(slide, store, params))
            if src == "oracle":
                seconds += time.perf_counter() - t0
                n_cells += len(table)
            yi = np.clip(np.floor(table.centroid_y).astype(int), 0, mask.shape[0] - 1)
            xi = np.clip(np.floor(table.centroid_x).astype(int), 0, mask.shape[1] - 1)
            truth = np.minimum(mask[yi, xi], n_cls)  # 3 = background
            np.add.at(conf[src], (truth, table.label), 1)
    print(f"{n_cells} nuclei in {len(list((val / 'img').glob('*.png')))} images, "  # noqa: T201
          f"{n_cells / max(seconds, 1e-9):.0f} nuclei/s (segmentation + read-out, 1 process)")
    for src, c in conf.items():
        accs = []
        parts = []
        for k, name in enumerate(CLASS_NAMES):
            tot = c[k].sum()
            acc = c[k, k] / tot if tot else float("nan")
            accs.append(acc)
            parts.append(f"{name} {acc:.3f} (n={tot})")
        print(f"{src:6s} accuracy per class: " + ", ".join(parts)  # noqa: T201
              + f"; mean {np.nanmean(accs):.3f}; on background: {c[n_cls].sum()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
