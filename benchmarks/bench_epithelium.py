"""What the epithelium prior costs: masks of the default segmentation model with the prior
against the same masks without it (the named baseline), measured in the same run.

1. images: the WSSS4LUAD validation images (``predict_mask``, one image at a time);
2. a slide: the real H&E sample ``sample_data/CMU-1-crop.tif`` (``slide_seg`` on the map
   grid of the CAM store; the prior runs once per region, in blocks).

    python benchmarks/bench_epithelium.py [--data DIR] [--threads N] [--repeat R]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "wsss4luad" / "validation"


def _best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    import numpy as np
    import torch

    from wsss_napari.epithelium import epithelium_available
    from wsss_napari.inference.predict import predict_mask
    from wsss_napari.inference.slide_seg import map_geometry, slide_seg
    from wsss_napari.io.slide import Slide
    from wsss_napari.models.checkpoint import default_seg_model_path, load_model
    from wsss_napari.params import CamParams
    from wsss_napari.progress import run_to_end
    from wsss_napari.train.data import load_rgb

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2, help="best of R runs")
    args = ap.parse_args(argv)
    reason = epithelium_available()
    if reason:
        print(f"skipping: {reason}")
        return 0
    torch.set_num_threads(args.threads)
    model = load_model(default_seg_model_path())
    off = CamParams(device="cpu", epithelium=0.0, threads=args.threads)
    on = off.replace(epithelium=1.0)
    print(f"default segmentation model ({model.config.extra.get('ensemble', 1)} members), "
          f"{args.threads} threads, best of {args.repeat}")
    images = [load_rgb(p) for p in sorted((args.data / "img").glob("*.png"))]
    if images:
        predict_mask(model, images[0], on)  # warm-up: onnxruntime session, caches
        mpx = sum(im.shape[0] * im.shape[1] for im in images) / 1e6
        t_off = _best(lambda: [predict_mask(model, im, off) for im in images], args.repeat)
        t_on = _best(lambda: [predict_mask(model, im, on) for im in images], args.repeat)
        print(f"{len(images)} images, {mpx:.2f} Mpx: without the prior {t_off:.1f} s, "
              f"with it {t_on:.1f} s ({t_on / t_off:.2f}x; the prior "
              f"{(t_on - t_off) / mpx:.2f} s/Mpx)")
    sample = REPO / "sample_data" / "CMU-1-crop.tif"
    if sample.is_file():
        with Slide.open(sample) as slide:
            geo, shape = map_geometry(slide, model, off)
            t_off = _best(lambda: run_to_end(slide_seg(slide, model, geo, shape, off)),
                          args.repeat)
            t_on = _best(lambda: run_to_end(slide_seg(slide, model, geo, shape, on)),
                         args.repeat)
            a = run_to_end(slide_seg(slide, model, geo, shape, off))
            b = run_to_end(slide_seg(slide, model, geo, shape, on))
        print(f"{sample.name} ({slide.shape[1]} x {slide.shape[0]} px, map {shape[1]} x "
              f"{shape[0]}): without the prior {t_off:.1f} s, with it {t_on:.1f} s "
              f"({t_on / t_off:.2f}x); {np.mean(a != b):.1%} of the map's pixels relabelled")
    return 0


if __name__ == "__main__":
    sys.exit(main())
