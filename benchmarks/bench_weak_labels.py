"""Honest numbers: weakly-supervised training on WSSS4LUAD validation images, 3-fold by image.

From ``../shared/data/wsss4luad/validation/`` patches are cut with a stride and labelled ONLY
with the set of classes they contain (the masks give the labels, never the pixels). For each
fold, a CAM classifier is trained on the patches of 2/3 of the images; the other 1/3 images
are then segmented and compared with their full masks. Reported, all from the same run:

* trivial baseline -- every tissue pixel gets the class most often present in the training
  patches' labels (the naive reference the ratios are taken against);
* CAM argmax       -- multi-scale CAMs, argmax over tumor / stroma / normal;
* CAM + post       -- the post-processing chain (``PostprocParams`` defaults, not tuned);
* CAM + post tuned -- the same, its parameters grid-searched (``tune.grid_search``, as
  ``wsss-napari tune``) against the masks of the fold's *training* images, then applied to
  the test images (whose masks are never seen; the training images gave only patch labels
  to the classifier);
* stage-2 seg      -- SegNet trained on the pseudo-masks of the training patches (encoder
  initialised from the stage-1 classifier), predicted with ``predict_mask``: Gaussian-
  blended windows of its training size, best tissue class where the background mask says
  tissue;
* stage-2 seg + flip -- the same, also averaging horizontally mirrored windows.

Levers of the recipe are flags (``--rot90``, ``--puzzle``, ``--act-dropout``, ``--area-loss``,
``--mosaic``, ``--cutmix``, ``--ignore-margin``, ``--exact-single``, ``--epochs-*``, ``--lr``,
``--scales``, ``--optimizer`` / ``--seg-optimizer`` (SAM), ``--stain-jitter``, ``--stain-norm``,
``--decoder``, ``--seg-loss``);
``--split`` chooses how images are dealt to folds (``fold_of``); ``--tta SET ...`` adds a
stage-2 row per test-time augmentation set (same model, eval only); ``--cam-only`` stops after
the CAM rows, for quick stage-1 experiments; ``--seg-only`` skips them (with ``--reuse`` and
pseudo-masks already in ``--work``: stage-2 experiments on the same pseudo-masks).

Metric: the challenge's mIoU over tumor / stroma / normal with the background mask given
(confusion matrices summed over all test images of all folds). CPU only; pick sizes with
``--patch``, ``--epochs-cls`` ... (``--quick`` for a smoke run of about two minutes).

    python benchmarks/bench_weak_labels.py            # ~13 min on 2 shared CPU cores
    python benchmarks/bench_weak_labels.py --quick
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "wsss4luad" / "validation"
METHODS = ("trivial baseline", "CAM argmax", "CAM + post", "CAM + post tuned", "stage-2 seg",
           "stage-2 seg + flip")


def methods(args) -> tuple[str, ...]:
    """The table's rows: ``METHODS`` plus one per ``--tta`` set."""
    self_trained = ("self-trained seg", "self-trained + flip") if args.self_train else ()
    ensemble = ("ensemble", "ensemble + flip") if args.ensemble else ()
    epi = ()
    if args.epithelium > 0:
        epi = ("stage-2 seg + epithelium", "stage-2 + flip + epithelium")
        epi += ("ensemble + epithelium", "ensemble + flip + epithelium") if args.ensemble else ()
    return (METHODS + tuple(f"stage-2 seg + tta {t}" for t in args.tta) + self_trained
            + ensemble + epi)


def load_images(root: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, rgb, mask) of every validation image."""
    from wsss_napari.train.data import load_mask, load_rgb

    out = []
    for p in sorted((root / "img").glob("*.png")):
        out.append((p.stem, load_rgb(p), load_mask(root / "mask" / p.name)))
    if not out:
        sys.exit(f"no images in {root / 'img'}")
    return out


def fold_of(masks: list[np.ndarray], split: str, n_folds: int = 3) -> list[int]:
    """Fold index of every image.

    ``mod3``: image ``i`` tests in fold ``i % 3`` (the split of the first rounds). It puts
    three of the four images with normal tissue (02, 05, 08) into fold 2's test set, so
    fold 2's classifier learns normal from one image and the pooled normal IoU is mostly
    that fold's. ``stratified``: images are dealt out rarest class first, each to the fold
    that holds the smallest share of its classes so far (ties: fewer images, lower index),
    so every fold trains and tests on each class where the data allow. Deterministic and
    computed from which classes an image contains, never from predictions.
    """
    if split == "mod3":
        return [i % n_folds for i in range(len(masks))]
    present = [{c for c in range(3) if (m == c).any()} for m in masks]
    total = [max(1, sum(c in p for p in present)) for c in range(3)]
    order = sorted(range(len(masks)),
                   key=lambda i: (min((total[c] for c in present[i]), default=10**9), i))
    held = [[0] * 3 for _ in range(n_folds)]
    size = [0] * n_folds
    out = [0] * len(masks)
    for i in order:
        f = min(range(n_folds), key=lambda f: (
            sum(held[f][c] / total[c] for c in present[i]), size[f], f))
        out[i] = f
        size[f] += 1
        for c in present[i]:
            held[f][c] += 1
    return out


def cut_patches(rgb: np.ndarray, gt: np.ndarray, size: int, stride: int,
                min_fraction: float, max_background: float
                ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Patches and their image-level labels (classes covering >= min_fraction of the patch)."""
    from wsss_napari.train.weak import cut_weak_patches

    return [(patch, labels) for _, _, patch, labels in
            cut_weak_patches(rgb, gt, size, stride, min_fraction, max_background)]


#: integer magnification of every image (``--zoom``); scoring samples one pixel per block
ZOOM = 1


def zoom_image(rgb: np.ndarray, gt: np.ndarray, z: int) -> tuple[np.ndarray, np.ndarray]:
    """``rgb`` magnified ``z`` times (bicubic) and ``gt`` by pixel repetition, so that
    ``gt_z[z // 2::z, z // 2::z] == gt`` exactly (scoring stays at the masks' resolution)."""
    import cv2

    h, w = gt.shape
    big = cv2.resize(rgb, (w * z, h * z), interpolation=cv2.INTER_CUBIC)
    return big, np.repeat(np.repeat(gt, z, axis=0), z, axis=1)


def _conf(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    from wsss_napari.metrics import confusion_matrix, force_background

    if ZOOM > 1:  # back to the masks' own pixels: the centre sample of every z x z block
        o = ZOOM // 2
        pred, gt = pred[o::ZOOM, o::ZOOM], gt[o::ZOOM, o::ZOOM]
    return confusion_matrix(force_background(pred, gt == 3), gt)


def run_fold(fold: int, train, test, args, work: Path) -> dict[str, np.ndarray]:
    """Train on ``train`` images' patches, evaluate on ``test`` images; confusions per method."""
    from wsss_napari.inference.multiscale import multiscale_cam
    from wsss_napari.models.checkpoint import load_model
    from wsss_napari.params import CamParams, PostprocParams, TrainClsParams
    from wsss_napari.postproc import postprocess
    from wsss_napari.progress import run_to_end
    from wsss_napari.train.cls import train_classifier
    from wsss_napari.train.data import items_from_arrays
    from wsss_napari.train.pseudo import make_pseudo_masks

    t0 = time.perf_counter()
    samples = [(p, None, lab) for _, rgb, gt in train
               for p, lab in cut_patches(rgb, gt, args.patch, args.stride, args.min_fraction,
                                         args.max_background)]
    items = items_from_arrays(samples, work / f"fold{fold}" / "patches")
    labels = np.array([it.labels for it in items])
    print(f"fold {fold}: {len(train)} train images -> {len(items)} patches "
          f"(positives {labels.sum(0).tolist()}), {len(test)} test images", flush=True)

    cls_params = TrainClsParams(backbone=args.backbone, epochs=args.epochs_cls,
                                batch_size=args.batch, crop_size=args.patch, val_fraction=0.0,
                                cutmix=args.cutmix, mosaic=args.mosaic, seed=fold + args.seed,
                                rot90=args.rot90, balance=args.balance, puzzle=args.puzzle,
                                act_dropout=args.act_dropout, area_loss=args.area_loss,
                                device="cpu", lr=args.lr, pretrained=args.pretrained,
                                optimizer=args.optimizer, sam_rho=args.sam_rho,
                                stain_jitter=args.stain_jitter, stain_norm=args.stain_norm)
    cam_path = work / f"fold{fold}" / "cam.safetensors"
    if args.reuse and cam_path.is_file():
        print(f"fold {fold}: reusing {cam_path}", flush=True)
    else:
        run_to_end(train_classifier(items, cam_path, cls_params))
    t_cls = time.perf_counter()
    cam_model = load_model(cam_path)
    cam_params = CamParams(scales=tuple(args.scales), device="cpu", batch_size=32)
    post = PostprocParams()
    confs = {m: np.zeros((4, 4), np.int64) for m in methods(args)}
    mask_dir = work / f"fold{fold}" / f"pseudo{args.pseudo_tag}"
    if args.seg_only:
        if not (args.reuse and (mask_dir / "pseudo.run.json").is_file()):
            sys.exit(f"--seg-only needs --reuse and the pseudo-masks in {mask_dir}")
        return _stage2(fold, items, cam_path, mask_dir, confs, test, args, work, t_cls, train)
    # the post-processing tuned on the training images' masks (never the test images')
    from wsss_napari.tune import TuneSample, default_grid, grid_search

    tune_samples = []
    for name, rgb, gt in train:
        res = multiscale_cam(cam_model, rgb, cam_params)
        tune_samples.append(TuneSample(cams=res.cams, gt=gt, image=rgb, scores=res.scores,
                                       background=gt == 3, name=name))
    tuned = run_to_end(grid_search(tune_samples, default_grid(), base=post))
    t_tune = time.perf_counter()
    changed = {k: v for k, v in tuned.best.to_dict().items() if v != post.to_dict()[k]}
    print(f"fold {fold}: tuned on {len(train)} training images' masks in "
          f"{t_tune - t_cls:.0f}s (mIoU there {tuned.report['miou']:.3f}): {changed}",
          flush=True)

    majority = int(np.argmax(labels.sum(0)))
    for _, rgb, gt in test:
        confs["trivial baseline"] += _conf(np.full(gt.shape, majority, np.uint8), gt)
        res = multiscale_cam(cam_model, rgb, cam_params)
        confs["CAM argmax"] += _conf(res.cams.argmax(0).astype(np.uint8), gt)
        pm = postprocess(res.cams, post, image=rgb, scores=res.scores, background=gt == 3)
        confs["CAM + post"] += _conf(pm, gt)
        pm = postprocess(res.cams, tuned.best, image=rgb, scores=res.scores,
                         background=gt == 3)
        confs["CAM + post tuned"] += _conf(pm, gt)
    t_eval_cam = time.perf_counter()
    if args.cam_only:
        confs.pop("stage-2 seg")
        print(f"fold {fold}: train-cls {t_cls - t0:.0f}s, CAM eval {t_eval_cam - t_cls:.0f}s",
              flush=True)
        return confs

    if args.reuse and (mask_dir / "pseudo.run.json").is_file():
        print(f"fold {fold}: reusing the pseudo-masks in {mask_dir}", flush=True)
    else:
        run_to_end(make_pseudo_masks(cam_model, items, mask_dir, cam_params,
                                     tuned.best if args.pseudo_tuned else post,
                                     ignore_margin=args.ignore_margin,
                                     exact_single=args.exact_single,
                                     cam_epithelium=args.cam_epithelium))
    print(f"fold {fold}: train-cls {t_cls - t0:.0f}s, CAM eval {t_eval_cam - t_cls:.0f}s, "
          f"pseudo {time.perf_counter() - t_eval_cam:.0f}s", flush=True)
    return _stage2(fold, items, cam_path, mask_dir, confs, test, args, work,
                   time.perf_counter(), train)


def _stage2(fold: int, items, cam_path: Path, mask_dir: Path, confs: dict[str, np.ndarray],
            test, args, work: Path, t_start: float, train) -> dict[str, np.ndarray]:
    """Train (or reuse) the stage-2 model on the pseudo-masks; its rows on the test images."""
    from wsss_napari.models.checkpoint import load_model
    from wsss_napari.params import CamParams, TrainSegParams
    from wsss_napari.progress import run_to_end
    from wsss_napari.train.data import PatchItem
    from wsss_napari.train.seg import train_segmenter

    seg_items = [PatchItem(it.path, it.labels, mask_dir / (it.path.stem + ".png"))
                 for it in items]
    seg_path = work / f"fold{fold}" / f"seg{args.seg_tag}.safetensors"
    seg_params = TrainSegParams(encoder=args.backbone, decoder=args.decoder,
                                epochs=args.epochs_seg, batch_size=args.batch_seg,
                                crop_size=args.patch, val_fraction=0.0, seed=fold + args.seed,
                                device="cpu", lr=args.lr, weights=str(cam_path), rot90=args.rot90,
                                mosaic=args.seg_mosaic, loss=args.seg_loss,
                                optimizer=args.seg_optimizer, sam_rho=args.sam_rho,
                                stain_jitter=args.seg_stain_jitter, balance=args.seg_balance)
    if args.reuse and seg_path.is_file():
        print(f"fold {fold}: reusing {seg_path}", flush=True)
    else:
        run_to_end(train_segmenter(seg_items, None, seg_path, seg_params))
    t_train = time.perf_counter()
    seg_model = load_model(seg_path)
    seg_cam = CamParams(device="cpu", batch_size=32, epithelium=0.0, context_um=0.0)
    if args.epithelium > 0:
        seg_cam = seg_cam.replace(air_threshold=_air_threshold(fold, seg_model, train, args))
    rows = (("stage-2 seg", seg_cam), ("stage-2 seg + flip", seg_cam.replace(flip=True)),
            *((f"stage-2 seg + tta {t}", seg_cam.replace(tta=t)) for t in args.tta),
            *_epithelium_rows("stage-2 seg", "stage-2 +", seg_cam, args))
    t_eval = _eval_seg(seg_model, rows, test, confs)
    print(f"fold {fold}: train-seg {t_train - t_start:.0f}s; predict "
          + ", ".join(f"{k.removeprefix('stage-2 seg')or 'plain'} {v:.0f}s"
                      for k, v in t_eval.items()), flush=True)
    if args.self_train:
        _self_train(fold, items, seg_model, seg_params, seg_cam, confs, test, args, work)
    if args.ensemble:
        from wsss_napari.models.ensemble import build_ensemble

        paths = [seg_path] + [_member_path(spec, work, fold) for spec in args.ensemble]
        ens = build_ensemble([load_model(p) for p in paths], [str(p) for p in paths])
        t_ens = _eval_seg(ens, (("ensemble", seg_cam), ("ensemble + flip",
                                                        seg_cam.replace(flip=True)),
                                *_epithelium_rows("ensemble", "ensemble +", seg_cam, args)),
                          test, confs)
        print(f"fold {fold}: ensemble of {len(paths)} predict "
              + ", ".join(f"{v:.0f}s" for v in t_ens.values()), flush=True)
    return confs


def _epithelium_rows(name: str, prefix: str, cam, args) -> tuple:
    """The test-time epithelium prior rows (``--epithelium W``), plain and with flip."""
    if args.epithelium <= 0:
        return ()
    epi = cam.replace(epithelium=args.epithelium, context_um=args.context_um)
    return ((f"{name} + epithelium", epi), (f"{prefix} flip + epithelium", epi.replace(flip=True)))


AIR_GRID = (0.3, 0.35, 0.4, 0.45, 0.5, 0.55)


def _air_threshold(fold: int, model, train, args) -> float:
    """``--air-threshold``, or with ``-1`` the one of ``AIR_GRID`` that scores best on the
    fold's *training* images' masks (the stage-2 model's own images: never the test ones)."""
    if args.air_threshold >= 0:
        return args.air_threshold
    from wsss_napari.airiness import glass_fraction, regional_vote
    from wsss_napari.epithelium import load_epithelium_prior, reweight_by_tissue, warn_unavailable
    from wsss_napari.inference.predict import seg_probabilities
    from wsss_napari.metrics import iou_report
    from wsss_napari.params import CamParams

    confs = {t: np.zeros((4, 4), np.int64) for t in AIR_GRID}
    mpp, names = model.config.mpp or 1.0, model.config.class_names
    for _, rgb, gt in train:
        prob = seg_probabilities(model, rgb, CamParams(device="cpu", batch_size=32,
                                                       epithelium=0.0, context_um=0.0))
        # the network and the glass fraction once per image; only the threshold varies
        p = None if warn_unavailable() else load_epithelium_prior().probability(rgb, mpp)
        fraction = glass_fraction(rgb, mpp)
        for t in AIR_GRID:
            q = prob if p is None else reweight_by_tissue(prob, p, fraction, names,
                                                          args.epithelium, t)
            q = regional_vote(q, names, args.context_um / mpp)
            label = np.argmax(q[:-1], axis=0).astype(np.uint8)
            confs[t] += _conf(np.where(gt == 3, 3, label).astype(np.uint8), gt)
    best = max(AIR_GRID, key=lambda t: iou_report(confs[t])["miou"])
    print(f"fold {fold}: air threshold {best} (mIoU {iou_report(confs[best])['miou']:.3f} on "
          "the training images' masks)", flush=True)
    return best


def _member_path(spec: str, work: Path, fold: int) -> Path:
    """``[WORK]:TAG`` -> ``WORK/fold<fold>/seg<TAG>.safetensors`` (WORK defaults to --work)."""
    root, _, tag = spec.rpartition(":")
    p = Path(root or work) / f"fold{fold}" / f"seg{tag}.safetensors"
    if not p.is_file():
        sys.exit(f"--ensemble {spec}: no {p}")
    return p


def _eval_seg(model, rows, test, confs: dict[str, np.ndarray]) -> dict[str, float]:
    """Add ``model``'s confusions on ``test`` to each row ``(name, CamParams)``; seconds each."""
    from wsss_napari.inference.predict import predict_mask

    t_eval = {}
    for row, cam in rows:
        t1 = time.perf_counter()
        for _, rgb, gt in test:
            confs[row] += _conf(predict_mask(model, rgb, cam, background=gt == 3), gt)
        t_eval[row] = time.perf_counter() - t1
    return t_eval


def _self_train(fold: int, items, seg_model, seg_params, seg_cam, confs, test, args,
                work: Path) -> None:
    """One round of self-training: the stage-2 model relabels its training patches
    (``pseudo`` with a segmentation model), and a fresh stage-2 model (same parameters,
    initialised from the CAM model again) learns from those masks."""
    from wsss_napari.models.checkpoint import load_model
    from wsss_napari.params import PostprocParams
    from wsss_napari.progress import run_to_end
    from wsss_napari.train.data import PatchItem
    from wsss_napari.train.pseudo import make_pseudo_masks
    from wsss_napari.train.seg import train_segmenter

    t0 = time.perf_counter()
    st_dir = work / f"fold{fold}" / f"pseudo{args.pseudo_tag}_st{args.seg_tag}"
    if not (args.reuse and (st_dir / "pseudo.run.json").is_file()):
        run_to_end(make_pseudo_masks(seg_model, items, st_dir, seg_cam, PostprocParams(),
                                     exact_single=args.exact_single))
    st_path = work / f"fold{fold}" / f"seg{args.seg_tag}_st.safetensors"
    if not (args.reuse and st_path.is_file()):
        st_items = [PatchItem(it.path, it.labels, st_dir / (it.path.stem + ".png"))
                    for it in items]
        run_to_end(train_segmenter(st_items, None, st_path, seg_params))
    t_train = time.perf_counter()
    _eval_seg(load_model(st_path), (("self-trained seg", seg_cam),
                                    ("self-trained + flip", seg_cam.replace(flip=True))),
              test, confs)
    print(f"fold {fold}: self-training (relabel + train-seg) {t_train - t0:.0f}s", flush=True)


def main(argv: list[str] | None = None) -> int:
    from wsss_napari.params import CamParams

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--patch", type=int, default=128, help="patch / crop size (px)")
    ap.add_argument("--stride", type=int, default=64)
    ap.add_argument("--min-fraction", type=float, default=0.02,
                    help="a class is in a patch's label if it covers this fraction")
    ap.add_argument("--max-background", type=float, default=0.8)
    ap.add_argument("--backbone", default="mobilenetv3_small_100")
    ap.add_argument("--pretrained", action="store_true",
                    help="start from ImageNet weights (local for efficientnet_lite0)")
    ap.add_argument("--reuse", action="store_true",
                    help="reuse the CAM models already in --work (stage-2 / post-processing "
                    "experiments on the same classifiers)")
    ap.add_argument("--seg-tag", default="",
                    help="suffix of the stage-2 model's file name in --work (variants side by "
                    "side with --reuse)")
    ap.add_argument("--decoder", default="deeplabv3plus")
    ap.add_argument("--seg-loss", default="ce+dice", help="stage 2: ce+dice or bce+dice")
    ap.add_argument("--optimizer", default="sgd", help="stage 1: sgd, adamw, sam, sam-adamw")
    ap.add_argument("--seg-optimizer", default="sgd", help="stage 2: sgd, adamw, sam, sam-adamw")
    ap.add_argument("--sam-rho", type=float, default=0.05, help="SAM radius (both stages)")
    ap.add_argument("--stain-jitter", type=float, default=0.03,
                    help="stage 1: HED stain jitter strength (TrainClsParams default 0.03)")
    ap.add_argument("--stain-norm", default="none", help="stage 1: none, reinhard, macenko")
    ap.add_argument("--seg-stain-jitter", type=float, default=0.0,
                    help="stage 2: HED stain jitter strength (TrainSegParams default 0.03; "
                    "0 here keeps the recorded rows reproducible)")
    ap.add_argument("--tta", nargs="*", default=[],
                    help="stage 2: also a row per test-time augmentation set (hflip, flips, "
                    "rot90, d4, ...+scales); same model, eval only")
    ap.add_argument("--epochs-cls", type=int, default=10)
    ap.add_argument("--epochs-seg", type=int, default=20)
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--batch-seg", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--cutmix", type=float, default=0.0)
    ap.add_argument("--mosaic", type=float, default=0.0)
    ap.add_argument("--seg-mosaic", type=float, default=0.0,
                    help="stage 2: probability of a mosaic of single-label patches")
    ap.add_argument("--seg-balance", action="store_true",
                    help="stage 2: patches of rare classes drawn more often")
    ap.add_argument("--puzzle", type=float, default=0.0, help="Puzzle-CAM weight (stage 1)")
    ap.add_argument("--act-dropout", type=float, default=0.0,
                    help="activation dropout (ADL) probability (stage 1)")
    ap.add_argument("--area-loss", type=float, default=0.0,
                    help="area loss weight (stage 1; train.area_loss)")
    ap.add_argument("--balance", action="store_true", help="class-balanced patch sampling")
    ap.add_argument("--rot90", action="store_true", help="random 90-degree rotations")
    ap.add_argument("--exact-single", action="store_true",
                    help="single-label patches' pseudo-masks without the model (class on "
                    "tissue, background on glass)")
    ap.add_argument("--self-train", action="store_true",
                    help="stage 2 relabels its training patches and a fresh stage-2 model "
                    "learns from them (one round; rows 'self-trained')")
    ap.add_argument("--ensemble", nargs="+", default=[], metavar="[WORK]:TAG",
                    help="stage 2: also rows of this run's model averaged with these "
                    "(WORK/fold<k>/seg<TAG>.safetensors; WORK defaults to --work) as one "
                    "ensemble (models.ensemble); eval only")
    ap.add_argument("--pseudo-tag", default="",
                    help="suffix of the pseudo-mask folder (variants side by side with --reuse)")
    ap.add_argument("--context-um", type=float, default=CamParams().context_um,
                    help="the epithelium rows' regional vote of normal versus stroma "
                         "(CamParams.context_um, sigma in um; 0 = pixel by pixel)")
    ap.add_argument("--air-threshold", type=float, default=-1.0,
                    help="the epithelium rows' alveolar switch (CamParams.air_threshold; "
                         "0 = epithelium alone; -1 = chosen per fold on the training images' "
                         "masks, the default)")
    ap.add_argument("--cam-epithelium", type=float, default=0.0,
                    help="weight of the epithelium prior in the CAM pseudo-masks (0 = off)")
    ap.add_argument("--epithelium", type=float, default=0.0,
                    help="also the stage-2 rows with the test-time epithelium prior of this "
                         "weight (CamParams.epithelium; 0 = no such rows)")
    ap.add_argument("--ignore-margin", type=float, default=0.0,
                    help="pseudo-mask pixels with a smaller CAM margin are ignored in stage 2")
    ap.add_argument("--scales", type=float, nargs="+", default=[0.75, 1.0, 1.5])
    ap.add_argument("--pseudo-tuned", action="store_true",
                    help="pseudo-masks with the tuned post-processing (default: the defaults)")
    ap.add_argument("--zoom", type=int, default=1,
                    help="magnify every image this many times before cutting patches (patch, "
                    "stride and crops scale with it; predictions are scored at the masks' own "
                    "resolution): the input-resolution lever")
    ap.add_argument("--split", choices=("stratified", "mod3"), default="stratified",
                    help="how images are dealt to folds (see fold_of); mod3: the first "
                         "rounds' split")
    ap.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--seed", type=int, default=0,
                    help="added to the fold index to seed training (run-to-run noise)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cam-only", action="store_true",
                    help="stop after the CAM rows (for quick stage-1 experiments)")
    ap.add_argument("--seg-only", action="store_true",
                    help="skip the CAM rows (with --reuse and pseudo-masks in --work)")
    ap.add_argument("--work", type=Path, help="keep patches, models and pseudo-masks here")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: one fold, 96 px patches, 2 + 1 epochs, one scale")
    args = ap.parse_args(argv)
    if args.quick:
        args.patch, args.stride, args.epochs_cls, args.epochs_seg = 96, 64, 2, 1
        args.scales, args.folds = [1.0], [0]

    import torch

    from wsss_napari.metrics import iou_report

    torch.set_num_threads(args.threads)
    if not (args.data / "img").is_dir():
        print(f"WSSS4LUAD validation data not found at {args.data}; skipping")
        return 0
    images = load_images(args.data)
    if args.zoom > 1:
        global ZOOM
        ZOOM = args.zoom
        images = [(name, *zoom_image(rgb, gt, args.zoom)) for name, rgb, gt in images]
        args.patch, args.stride = args.patch * args.zoom, args.stride * args.zoom
    t0 = time.perf_counter()
    total = {m: np.zeros((4, 4), np.int64) for m in methods(args)}
    with tempfile.TemporaryDirectory(prefix="wsss_bench_") as tmp:
        work = args.work or Path(tmp)
        folds = fold_of([gt for _, _, gt in images], args.split)
        for fold in args.folds:
            test = [im for im, f in zip(images, folds, strict=True) if f == fold]
            train = [im for im, f in zip(images, folds, strict=True) if f != fold]
            print(f"fold {fold} ({args.split}): test images "
                  f"{' '.join(name for name, _, _ in test)}", flush=True)
            for m, c in run_fold(fold, train, test, args, work).items():
                total[m] += c
                if c.any():
                    r = iou_report(c)
                    print(f"fold {fold}: {m}: mIoU {r['miou']:.3f} "
                          f"({', '.join(f'{k} {v:.3f}' for k, v in r['iou'].items())})",
                          flush=True)
    elapsed = time.perf_counter() - t0

    print()
    print(f"WSSS4LUAD validation, {len(images)} images, folds {args.folds} by image "
          f"({args.split}); "
          f"patches {args.patch}px stride {args.stride} (zoom {args.zoom}), "
          f"backbone {args.backbone}, "
          f"cls {args.epochs_cls} ep, seg {args.epochs_seg} ep ({args.decoder}, "
          f"{args.seg_loss}, {args.seg_optimizer}), "
          f"scales {args.scales}"
          + (f", CAM pseudo-mask epithelium prior {args.cam_epithelium:g}"
             if args.cam_epithelium else "")
          + (f", test-time epithelium prior {args.epithelium:g} (air threshold "
             f"{args.air_threshold:g}{' = per fold' if args.air_threshold < 0 else ''}, "
             f"regional vote {args.context_um:g} um)" if args.epithelium else "")
          + f"; {elapsed / 60:.1f} min")
    print("mIoU = mean IoU over tumor / stroma / normal, background mask given")
    head = (f"| {'method':<30} | {'tumor':>6} | {'stroma':>6} | {'normal':>6} | {'mIoU':>6} "
            "| vs trivial |")
    print(head)
    print("|" + "|".join("-" * (len(s)) for s in head.split("|")[1:-1]) + "|")
    base_c = total["trivial baseline"]
    base = iou_report(base_c)["miou"] if base_c.any() else float("nan")
    for m in methods(args):
        if not total[m].any():
            continue
        r = iou_report(total[m])
        iou = r["iou"]
        ratio = f"{r['miou'] / base:>9.2f}x" if base == base else f"{'-':>10}"
        print(f"| {m:<30} | {iou['tumor']:>6.3f} | {iou['stroma']:>6.3f} | "
              f"{iou['normal']:>6.3f} | {r['miou']:>6.3f} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
