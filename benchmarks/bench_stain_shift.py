"""Stain robustness: held-out mIoU of CAM classifiers on HED-shifted copies of the test images.

The 3-fold weak-label benchmark (``bench_weak_labels.py``: 31 WSSS4LUAD validation images,
its folds: ``--split`` as there, default stratified) with the classifiers it left in
``--work`` folders (``fold{k}/cam.safetensors``; train more with ``bench_weak_labels.py
--cam-only --work DIR --stain-jitter X``) and, with ``--seg TAG``, its stage-2 models
(``fold{k}/seg{TAG}.safetensors``, rows "stage-2 seg{TAG}", background given). For each
classifier set and fold, the post-processing is tuned on the fold's *training* images'
masks (unshifted, as ``bench_weak_labels.py``), then every test image is shifted in
haematoxylin-eosin-DAB space (scikit-image ``rgb2hed`` / ``hed2rgb``): ``H += s * sign_H``,
``E += s * sign_E``, with the signs drawn once per image from a fixed seed (the same
direction at every size ``s``, so the curve follows one shift per image as it grows). For
reference, the H channel of these images is 0-0.15 (1st-99th percentile) and E 0-0.05.

``--norm reinhard macenko`` also normalises each shifted test image to the stain of the
fold's training images (``stain.estimate_many`` of the unshifted training images; the
image's own estimate as the source) before the CAMs: colour normalisation at inference only,
the classifier unchanged.

Rows: CAM argmax and CAM + the tuned post-processing, mIoU over tumor / stroma / normal with
the background mask given, confusions summed over the test images of all folds.

    python benchmarks/bench_stain_shift.py --set jitter0.03=/tmp/h16bench/lite0 \\
        --set jitter0=/tmp/h11seeds/nojit --shifts 0 0.02 0.05 0.1 --plot out.png
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_weak_labels import DEFAULT_DATA, _conf, fold_of, load_images  # noqa: E402


def hed_shift(rgb: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """``rgb`` with ``amount`` added to (random sign) its H and E concentrations."""
    from skimage.color import hed2rgb, rgb2hed

    signs = rng.choice([-1.0, 1.0], size=2)
    if amount == 0:
        return rgb
    hed = rgb2hed(rgb)
    hed[..., 0] += signs[0] * amount
    hed[..., 1] += signs[1] * amount
    return np.clip(np.rint(hed2rgb(hed) * 255.0), 0, 255).astype(np.uint8)


def run_set(name: str, work: Path, images, args, folds: list[int]
            ) -> dict[tuple, np.ndarray]:
    """Confusions keyed (norm, shift, row) of one classifier set over the folds."""
    from wsss_napari import stain
    from wsss_napari.inference.multiscale import multiscale_cam
    from wsss_napari.inference.predict import predict_mask
    from wsss_napari.models.checkpoint import load_model
    from wsss_napari.params import CamParams, PostprocParams
    from wsss_napari.postproc import postprocess
    from wsss_napari.progress import run_to_end
    from wsss_napari.tune import TuneSample, default_grid, grid_search

    out: dict[tuple, np.ndarray] = {}
    cam_params = CamParams(scales=tuple(args.scales), device="cpu", batch_size=32)
    seg_cam = CamParams(device="cpu", batch_size=32)
    of = fold_of([gt for _, _, gt in images], args.split)  # bench_weak_labels' folds
    for fold in folds:
        t0 = time.perf_counter()
        test = [(i, im) for i, im in enumerate(images) if of[i] == fold]
        train = [im for i, im in enumerate(images) if of[i] != fold]
        model = load_model(work / f"fold{fold}" / "cam.safetensors")
        segs = {tag: load_model(work / f"fold{fold}" / f"seg{tag}.safetensors")
                for tag in args.seg}
        samples = []
        for nm, rgb, gt in train:
            res = multiscale_cam(model, rgb, cam_params)
            samples.append(TuneSample(cams=res.cams, gt=gt, image=rgb, scores=res.scores,
                                      background=gt == 3, name=nm))
        tuned = run_to_end(grid_search(samples, default_grid(), base=PostprocParams())).best
        target = (stain.estimate_many([rgb for _, rgb, _ in train], source="training images")
                  if any(n != "none" for n in args.norm) else None)
        t1 = time.perf_counter()
        for shift in args.shifts:
            for norm in args.norm:
                if norm != "none" and shift not in args.norm_shifts:
                    continue
                for i, (_, rgb, gt) in test:
                    img = hed_shift(rgb, shift, np.random.default_rng(args.seed + i))
                    if norm != "none":
                        img = stain.normalizer_for_image(norm, target, img)(img)
                    res = multiscale_cam(model, img, cam_params)
                    for row, pred in (
                            ("CAM argmax", res.cams.argmax(0).astype(np.uint8)),
                            ("CAM + post tuned", postprocess(res.cams, tuned, image=img,
                                                             scores=res.scores,
                                                             background=gt == 3))):
                        key = (norm, shift, row)
                        c = _conf(pred, gt)
                        out[key] = out.get(key, 0) + c
                        fkey = (norm, shift, row, fold)
                        out[fkey] = out.get(fkey, 0) + c
                    for tag, seg in segs.items():
                        c = _conf(predict_mask(seg, img, seg_cam, background=gt == 3), gt)
                        for key in ((norm, shift, f"stage-2 seg{tag}"),
                                    (norm, shift, f"stage-2 seg{tag}", fold)):
                            out[key] = out.get(key, 0) + c
        print(f"{name} fold {fold}: tune {t1 - t0:.0f}s, shifted evals "
              f"{time.perf_counter() - t1:.0f}s", flush=True)
    return out


def plot(curves: dict[str, list[tuple[float, float]]], path: Path, title: str) -> None:
    """mIoU against shift size, one line per (set, norm) (PIL, no matplotlib)."""
    from _plot import Chart

    xs = [s for c in curves.values() for s, _ in c]
    ch = Chart(820, 480, (70, 250, 40, 55), [m for c in curves.values() for _, m in c],
               max(xs) or 1.0)
    ch.axes([(x, f"{x:g}") for x in sorted(set(xs))], -10,
            "HED shift of H and E (skimage rgb2hed units)", 120,
            "held-out mIoU (tumor / stroma / normal)", title)
    palette = [(0, 90, 200), (200, 0, 0), (0, 150, 70), (170, 60, 170), (230, 130, 0),
               (80, 80, 80), (0, 170, 170)]
    for i, (label, c) in enumerate(curves.items()):
        col = palette[i % len(palette)]
        pts = [ch.px(s, m) for s, m in c]
        if len(pts) > 1:
            ch.draw.line(pts, fill=col, width=2)
        for X, Y in pts:
            ch.draw.ellipse([X - 3, Y - 3, X + 3, Y + 3], fill=col)
        ch.legend(i, col, label)
    ch.save(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--set", action="append", required=True, metavar="NAME=WORKDIR[:F,F]",
                    help="a classifier set: NAME and the --work folder with fold{k}/; "
                    "optionally only some folds (default --folds)")
    ap.add_argument("--shifts", type=float, nargs="+", default=[0.0, 0.02, 0.05, 0.1])
    ap.add_argument("--norm", nargs="+", default=["none"],
                    help="inference-time stain normalisation: none, reinhard, macenko")
    ap.add_argument("--norm-sets", nargs="*", default=None,
                    help="sets that get --norm besides none (default: all)")
    ap.add_argument("--norm-shifts", type=float, nargs="*", default=None,
                    help="shift sizes at which the normalised rows run (default: all)")
    ap.add_argument("--scales", type=float, nargs="+", default=[0.75, 1.0, 1.5])
    ap.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--split", choices=("stratified", "mod3"), default="stratified",
                    help="how images were dealt to folds (bench_weak_labels --split)")
    ap.add_argument("--seg", nargs="*", default=[], metavar="TAG",
                    help="also stage-2 rows: fold{k}/seg{TAG}.safetensors ('' = seg.safetensors)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--plot", type=Path, help="write the mIoU-vs-shift plot (PNG) here")
    ap.add_argument("--json", type=Path, help="write the per-row numbers (JSON) here")
    args = ap.parse_args(argv)
    if args.norm_shifts is None:
        args.norm_shifts = list(args.shifts)

    import torch

    from wsss_napari.metrics import iou_report

    torch.set_num_threads(args.threads)
    if not (args.data / "img").is_dir():
        print(f"WSSS4LUAD validation data not found at {args.data}; skipping")
        return 0
    images = load_images(args.data)
    sets = []
    for spec in args.set:
        name, _, rest = spec.partition("=")
        work, _, fl = rest.partition(":")
        sets.append((name, work, [int(f) for f in fl.split(",")] if fl else args.folds))
    t0 = time.perf_counter()
    results = {}
    norms = args.norm
    set_folds = {}
    for name, work, folds in sets:
        args.norm = (norms if args.norm_sets is None or name in args.norm_sets
                     else ["none"])
        results[name] = run_set(name, Path(work), images, args, folds)
        set_folds[name] = folds
    print(f"\nHED-shifted test images, folds {set_folds}, scales {args.scales}, seed "
          f"{args.seed}; {(time.perf_counter() - t0) / 60:.1f} min")
    print("| classifiers | inference norm | shift | row | tumor | stroma | normal | mIoU | "
          "per fold |")
    print("|---|---|---|---|---|---|---|---|---|")
    rows, curves = [], {}
    for name, res in results.items():
        for key in sorted(k for k in res if len(k) == 3):
            norm, shift, row = key
            r = iou_report(res[key])
            folds = [iou_report(res[(*key, f)])["miou"] for f in set_folds[name]]
            rows.append({"set": name, "folds_used": set_folds[name], "norm": norm,
                         "shift": shift, "row": row, "iou": r["iou"], "miou": r["miou"],
                         "folds": folds})
            print(f"| {name} | {norm} | {shift:g} | {row} | {r['iou']['tumor']:.3f} | "
                  f"{r['iou']['stroma']:.3f} | {r['iou']['normal']:.3f} | "
                  f"**{r['miou']:.3f}** | {' / '.join(f'{m:.3f}' for m in folds)} |")
            if row == "CAM + post tuned" or row.startswith("stage-2"):
                label = (f"{name} (folds {','.join(map(str, set_folds[name]))}), {norm}"
                         + ("" if row == "CAM + post tuned" else f", {row}"))
                curves.setdefault(label, []).append((shift, r["miou"]))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    if args.plot:
        plot({k: sorted(v) for k, v in curves.items()}, args.plot,
             "CAM + tuned post-processing on HED-shifted held-out images (folds pooled)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
