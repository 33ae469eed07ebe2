"""Does the review queue save the pathologist time? A simulated pathologist on WSSS4LUAD.

3 folds by image over ``../shared/data/wsss4luad/validation`` (31 images), as in
``bench_weak_labels.py``: per fold a CAM classifier is trained on the weak (image-level)
patch labels of 2/3 of the images; each held-out image gets its multi-scale CAMs (per-scale
maps kept), its prediction (CAM argmax, background mask given) and its review queue
(``review_queue.build_queue``, tiles of ``--tile`` px). An oracle then "reviews" items by
copying the true mask into them, in queue (uncertainty) order or in random order (several
seeds), until a fraction of the image's tissue area has been reviewed (each image gets the
same budget). Reported: mIoU (tumor / stroma / normal, confusions summed over all held-out
images) against the fraction reviewed, for the margin, entropy and scale-disagreement
orders, the region-mode queue, the expected-gain queues (``score='expected_gain'``: class
sizes of each image per image, of the fold's images pooled) and random order; the gain over
no review is compared at 10 %.

Per fold the images also share one budget ("pooled": ranked together like the regions of
one slide). ``--models DIR`` reads each fold's classifier from ``DIR/fold<k>/cam.safetensors``
(read only; no classifier is trained). ``--finetune``: see ``review_finetune.py`` (fine-tune
on the 10 % corrections of half of each fold's held-out images, score the other half).

    python benchmarks/bench_review_queue.py --models /tmp/h16bench/lite0 --work /tmp/q \\
        --finetune --plot docs/images/review_queue.png
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_weak_labels import DEFAULT_DATA, cut_patches, load_images  # noqa: E402
from review_finetune import review  # noqa: E402

FRACTIONS = (0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3)
#: the queue's default metric (UncertaintyParams.metric): its queue gives the random orders'
#: tiles, the ceiling's tiles and the fine-tune's corrections
DEFAULT = "entropy"
#: the expected-gain queue (UncertaintyParams.score='expected_gain', entropy regions)
GAIN = "expected gain"


def _miou(conf: np.ndarray) -> float:
    from wsss_napari.metrics import iou_report

    return float(iou_report(conf)["miou"])


def _conf(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    from wsss_napari.metrics import confusion_matrix, force_background

    return confusion_matrix(force_background(pred, gt == 3), gt)


def predict(res, gt, uparams, stats=None):
    """Uncertainty map and queues of one image from its CAMs (background mask given).

    ``stats``: the class sizes the expected-gain queues are scored with (default: the
    image's own, as a queue built on that image alone); pooled ranking passes the fold's.
    """
    from wsss_napari.review_queue import build_queue
    from wsss_napari.uncertainty import uncertainty_map

    bg = gt == 3
    queues = {}
    metrics = ("margin", "entropy", "disagreement") if stats is None else (uparams.metric.value,)
    for metric in metrics:
        p = uparams.replace(metric=metric, mode="tile")
        um = uncertainty_map(res.cams, p, scale_cams=res.scale_cams, background=bg)
        if stats is None:
            queues[metric] = build_queue(um, res.cams, p, background=bg).items
        if metric == uparams.metric.value:  # the default metric: also its region queue
            pred = um.labels
            pr = uparams.replace(metric=metric, mode="region")
            if stats is None:
                queues[f"{metric} regions"] = build_queue(um, res.cams, pr, background=bg).items
            umr = um
    for mode, name in (("tile", GAIN), ("region", f"{GAIN} regions")):
        p = uparams.replace(mode=mode, score="expected_gain")
        queues[name] = build_queue(umr, res.cams, p, background=bg, stats=stats).items
    return pred, queues


def _by_error(per_image, merged):
    """Pooled oracle order: every tile by its true share of wrong pixels."""
    def err(ki):
        k, it = ki
        _, _, gt, pred, _ = per_image[k]
        r0, c0, h, w = it.box
        return -float(np.mean(pred[r0:r0 + h, c0:c0 + w][it.mask]
                              != gt[r0:r0 + h, c0:c0 + w][it.mask]))
    return sorted(merged, key=err)


def _review_pooled(per_image, merged, budget):
    outs, done = [pred.copy() for _, _, _, pred, _ in per_image], 0
    for k, it in merged:
        if done >= budget:
            break
        gt = per_image[k][2]
        r0, c0, h, w = it.box
        sub = outs[k][r0:r0 + h, c0:c0 + w]
        sub[it.mask] = gt[r0:r0 + h, c0:c0 + w][it.mask]
        done += it.area_px
    return outs, done


def run_fold(fold, train, test, args, work, rows, ft_rows):

    from wsss_napari.inference.multiscale import CamResult, multiscale_cam
    from wsss_napari.models.checkpoint import load_model
    from wsss_napari.params import CamParams, TrainClsParams, UncertaintyParams
    from wsss_napari.progress import run_to_end
    from wsss_napari.train.cls import train_classifier
    from wsss_napari.train.data import items_from_arrays

    t0 = time.perf_counter()
    cam_path = work / f"fold{fold}" / "cam.safetensors"
    if args.models is not None:  # a fold's classifier trained elsewhere: read only
        cam_path = args.models / f"fold{fold}" / "cam.safetensors"
        if not cam_path.is_file():
            raise SystemExit(f"--models: no {cam_path}")
    elif not cam_path.exists():
        samples = [(p, None, lab) for _, rgb, gt in train
                   for p, lab in cut_patches(rgb, gt, args.patch, args.stride, 0.02, 0.8)]
        items = items_from_arrays(samples, work / f"fold{fold}" / "patches")
        cls_params = TrainClsParams(backbone=args.backbone, epochs=args.epochs_cls,
                                    batch_size=20, crop_size=args.patch, val_fraction=0.0,
                                    seed=fold, device="cpu", lr=1e-2)
        run_to_end(train_classifier(items, cam_path, cls_params))
        print(f"fold {fold}: {len(items)} patches", flush=True)
    model = load_model(cam_path)
    t_cls = time.perf_counter()
    cam_params = CamParams(scales=tuple(args.scales), device="cpu", batch_size=32,
                           keep_scales=True)
    uparams = UncertaintyParams(tile=args.tile, min_area=0, max_items=0,
                                threshold=args.threshold)
    per_image, cams = [], []
    for name, rgb, gt in test:
        cached = work / f"fold{fold}" / f"{name}.cams.npz"
        if cached.exists():
            z = np.load(cached)
            res = CamResult(z["cams"], z["scores"], z["maxima"], z["scale_cams"])
        else:
            res = multiscale_cam(model, rgb, cam_params)
            np.savez(cached, cams=res.cams, scores=res.scores, maxima=res.maxima,
                     scale_cams=res.scale_cams)
        pred, queues = predict(res, gt, uparams)
        cams.append(res)
        # the ceiling: tiles in the order of their true share of wrong pixels
        queues["oracle (true errors)"] = sorted(
            queues[DEFAULT], key=lambda it: -float(np.mean(
                pred[it.box[0]:it.box[0] + it.box[2], it.box[1]:it.box[1] + it.box[3]][it.mask]
                != gt[it.box[0]:it.box[0] + it.box[2], it.box[1]:it.box[1] + it.box[3]][it.mask])))
        for seed in range(args.seeds):
            rng = np.random.default_rng(1000 * seed + zlib.crc32(name.encode()) % 1000)
            its = list(queues[DEFAULT])
            rng.shuffle(its)
            queues[f"random#{seed}"] = its
        per_image.append((name, rgb, gt, pred, queues))
    orders = list(per_image[0][4])
    # pooled: the expected-gain queues scored with the class sizes of all the fold's images
    from wsss_napari.uncertainty import class_stats

    stats = sum(class_stats(res.cams, uparams.bg_exponent, gt == 3)
                for res, (_, _, gt) in zip(cams, test, strict=True))
    pooled_queues = [predict(res, gt, uparams, stats)[1]
                     for res, (_, _, gt) in zip(cams, test, strict=True)]
    total = sum(int((gt != 3).sum()) for _, _, gt, _, _ in per_image)
    for f in FRACTIONS:
        for order in orders:
            # per image: each image gets f of its own tissue
            for _, _, gt, pred, queues in per_image:
                tissue = int((gt != 3).sum())
                out, done = review(pred, gt, queues[order], f * tissue)
                rows.append(("per image", order, f, _conf(out, gt), done, tissue, fold))
            # pooled: the fold's held-out images ranked together, like regions of one slide
            merged = [(k, it) for k, (*_, queues) in enumerate(per_image)
                      for it in pooled_queues[k].get(order, queues[order])]
            if order.startswith("random"):
                seed = int(order.split("#")[1])
                np.random.default_rng(fold * 7919 + 101 * seed).shuffle(merged)
            elif not order.startswith("oracle"):
                merged.sort(key=lambda ki: -ki[1].score)
            else:
                merged = _by_error(per_image, merged)
            outs, done = _review_pooled(per_image, merged, f * total)
            for (_, _, gt, _, _), out in zip(per_image, outs, strict=True):
                rows.append(("pooled", order, f, _conf(out, gt), 0, 0, fold))
            rows.append(("pooled", order, f, np.zeros((4, 4), np.int64), done, total, fold))
    t_eval = time.perf_counter()
    print(f"fold {fold}: classifier {model.config.backbone}, train {t_cls - t0:.0f}s, "
          f"CAMs + queues + oracle of {len(test)} images {t_eval - t_cls:.0f}s", flush=True)

    if args.finetune:
        from review_finetune import finetune_fold

        finetune_fold(fold, model, per_image, args, _conf, args.ft_orders, ft_rows)


def summarise(rows, seeds, setting, fold=None):
    """{order: [(fraction, mIoU, reviewed fraction, sd, per-seed mIoUs)]}, random seeds
    averaged; confusions summed over the images (of ``fold`` only, if given)."""
    rows = [r[1:] for r in rows if r[0] == setting and fold in (None, r[-1])]
    orders = sorted({r[0] for r in rows if not r[0].startswith(("random", "oracle"))})
    out = {}
    for order in orders + ["random", "oracle (true errors)"]:
        line = []
        for f in FRACTIONS:
            names = [f"random#{s}" for s in range(seeds)] if order == "random" else [order]
            mious, fr = [], []
            for nm in names:
                sel = [r for r in rows if r[0] == nm and r[1] == f]
                mious.append(_miou(sum(r[2] for r in sel)))
                fr.append(sum(r[3] for r in sel) / max(sum(r[4] for r in sel), 1))
            line.append((f, float(np.mean(mious)), float(np.mean(fr)), float(np.std(mious)),
                         mious))
        out[order] = line
    return out


def gains(summary, at: float = 0.1) -> dict[str, tuple[float, float, float, float]]:
    """{order: (gain at ``at``, random's mean gain, ratio, ratio's range over the seeds)}."""
    i = FRACTIONS.index(at)
    base = summary["random"][0][1]
    g_seeds = [m - base for m in summary["random"][i][4]]
    g_rand = float(np.mean(g_seeds))
    out = {}
    for order, line in summary.items():
        g = line[i][1] - base
        ratios = [g / x if x > 0 else float("inf") for x in g_seeds]
        out[order] = (g, g_rand, g / g_rand if g_rand > 0 else float("inf"),
                      max(ratios) - min(ratios))
    return out


def plot(summary, path: Path, title: str) -> None:
    """mIoU against the reviewed share of the tissue, one line per order (PIL, no matplotlib)."""
    from _plot import Chart

    x1 = 100 * max(r[2] for line in summary.values() for r in line)
    x1 = max(30.0, float(np.ceil(x1 / 5) * 5))
    ch = Chart(760, 480, (70, 190, 40, 55), [m for line in summary.values() for _, m, *_ in line],
               x1)
    ch.axes([(x, f"{x}") for x in range(0, int(x1) + 1, 5)], -8, "tissue area reviewed (%)",
            150, "mIoU (tumor / stroma / normal)", title)
    d, px = ch.draw, ch.px
    colors = {"margin": (0, 90, 200), "entropy": (0, 150, 70), "disagreement": (170, 60, 170),
              "entropy regions": (230, 130, 0), "random": (200, 0, 0),
              GAIN: (0, 0, 0), f"{GAIN} regions": (120, 80, 40),
              "oracle (true errors)": (150, 150, 150)}
    for i, (order, line) in enumerate(summary.items()):
        c = colors.get(order, (80, 80, 80))
        pts = [px(100 * r[2], r[1]) for r in line]
        d.line(pts, fill=c, width=3 if order in (DEFAULT, GAIN, "random") else 2)
        for X, Y in pts:
            d.ellipse([X - 3, Y - 3, X + 3, Y + 3], fill=c)
        if order == "random":
            for r in line:
                X, Ya = px(100 * r[2], r[1] - r[3])
                _, Yb = px(100 * r[2], r[1] + r[3])
                d.line([X, Ya, X, Yb], fill=c, width=1)
        ch.legend(i, c, "random order (mean, +-sd)" if order == "random" else f"{order} order")
    ch.save(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--patch", type=int, default=128)
    ap.add_argument("--stride", type=int, default=64)
    ap.add_argument("--backbone", default="tf_efficientnet_lite0")
    ap.add_argument("--epochs-cls", type=int, default=6)
    ap.add_argument("--scales", type=float, nargs="+", default=[0.75, 1.0, 1.5])
    ap.add_argument("--tile", type=int, default=32, help="queue tile edge (px)")
    ap.add_argument("--threshold", type=float, default=0.5, help="region-mode threshold")
    ap.add_argument("--seeds", type=int, default=5, help="random-order repetitions")
    ap.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--finetune", action="store_true",
                    help="also fine-tune on the 10 %% corrections (see the docstring)")
    ap.add_argument("--ft-steps", type=int, default=50, help="fine-tune steps (widget: 50)")
    ap.add_argument("--ft-lr", type=float, default=1e-3, help="fine-tune lr (widget: 1e-3)")
    ap.add_argument("--ft-crop", type=int, default=224, help="fine-tune crop (widget: 224)")
    ap.add_argument("--ft-random", type=int, default=3, help="random orders fine-tuned on")
    ap.add_argument("--ft-orders", nargs="+", default=[DEFAULT],
                    help="queue orders fine-tuned on (besides the random ones): queue names "
                         f"('{DEFAULT}', '{GAIN}', ...) or 'mixed' (half the budget in "
                         "expected-gain order, half random spot checks)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--plot", type=Path, help="write the mIoU-vs-fraction plot (PNG) here")
    ap.add_argument("--models", type=Path,
                    help="read each fold's CAM classifier from DIR/fold<k>/cam.safetensors "
                         "(read only; e.g. bench_weak_labels.py's --work); CAMs are cached "
                         "under --work")
    ap.add_argument("--work", type=Path,
                    help="keep the models and CAMs here; a rerun reuses them (no training)")
    ap.add_argument("--limit", type=int, default=0,
                    help="use only the first N images (smoke runs); 0 = all")
    ap.add_argument("--quick", action="store_true", help="one fold, 2 epochs, one scale pair")
    args = ap.parse_args(argv)
    if args.quick:
        args.epochs_cls, args.folds, args.scales, args.seeds = 2, [0], [1.0, 1.5], 2
        args.ft_steps, args.ft_random = 5, 1

    import torch

    torch.set_num_threads(args.threads)
    if not (args.data / "img").is_dir():
        print(f"WSSS4LUAD validation data not found at {args.data}; skipping")
        return 0
    images = load_images(args.data)
    if args.limit:
        images = images[:args.limit]
    t0 = time.perf_counter()
    rows: list = []
    ft_rows: list = []
    with tempfile.TemporaryDirectory(prefix="wsss_bench_queue_") as tmp:
        for fold in args.folds:
            test = [im for i, im in enumerate(images) if i % 3 == fold]
            train = [im for i, im in enumerate(images) if i % 3 != fold]
            work = args.work or Path(tmp)
            (work / f"fold{fold}").mkdir(parents=True, exist_ok=True)
            run_fold(fold, train, test, args, work, rows, ft_rows)
    elapsed = time.perf_counter() - t0
    print()
    who = (f"{args.models}/fold<k>/cam.safetensors" if args.models else
           f"{args.backbone} {args.epochs_cls} ep on {args.patch}px weak patches (unless "
           "reused from --work)")
    print(f"WSSS4LUAD validation, {len(images)} images, folds {args.folds}; classifier "
          f"{who}; scales "
          f"{args.scales}; queue tiles {args.tile}px; random order: {args.seeds} seeds; "
          f"{elapsed / 60:.1f} min")
    summaries = {}
    for setting in ("per image", "pooled"):
        summary = summaries[setting] = summarise(rows, args.seeds, setting)
        print()
        print(f"{setting}: budget = a share of " + ("each image's tissue" if setting ==
              "per image" else "the tissue of each fold's held-out images ranked together"))
        head = "| order | " + " | ".join(f"{100 * f:g} %" for f in FRACTIONS) + " |"
        print(head)
        print("|" + "---|" * (len(FRACTIONS) + 1))
        for order, line in summary.items():
            cells = " | ".join(f"{m:.3f}" for _, m, *_ in line)
            print(f"| {order} | {cells} |")
        i10 = FRACTIONS.index(0.1)
        print("(random: mean of the seeds; their sd: " + ", ".join(
            f"{100 * r[0]:g} % {r[3]:.3f}" for r in summary["random"]) + ")")
        print("(reviewed share at the 10 % column: " + ", ".join(
            f"{o} {100 * line[i10][2]:.1f} %" for o, line in summary.items()) + ")")
        for order, (g, g_rand, ratio, spread) in gains(summary).items():
            if order != "random":
                print(f"gain at 10 % ({setting}): {order} {g:+.3f} vs random {g_rand:+.3f} "
                      f"-> {ratio:.2f}x (range over the random seeds {spread:.2f})")
        if len(args.folds) > 1:
            for fold in args.folds:
                g = gains(summarise(rows, args.seeds, setting, fold))
                print(f"  fold {fold} ({setting}): " + ", ".join(
                    f"{o} {v[0]:+.3f} {v[2]:.2f}x" for o, v in g.items()
                    if o in (DEFAULT, GAIN, f"{GAIN} regions", "random",
                             "oracle (true errors)")))
    if ft_rows:
        from review_finetune import report

        report(ft_rows, _miou)
    if args.plot:
        from PIL import Image

        panels = []
        for setting, summary in summaries.items():
            tmp = args.plot.with_suffix(f".{setting.replace(' ', '_')}.png")
            plot(summary, tmp, f"WSSS4LUAD validation, {len(images)} images, folds "
                 f"{args.folds}, {args.tile}px tiles; budget {setting}")
            panels.append(Image.open(tmp).copy())
            tmp.unlink()
        both = Image.new("RGB", (sum(p.width for p in panels), panels[0].height), "white")
        for i, p in enumerate(panels):
            both.paste(p, (i * panels[0].width, 0))
        both.save(args.plot)
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
