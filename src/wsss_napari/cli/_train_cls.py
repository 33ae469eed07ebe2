"""``wsss-napari train-cls``: train the CAM classifier from patch-level labels (stage 1)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..params import TrainClsParams
from ._params import add_params_arguments, params_from_args
from ._training import add_training_arguments, finish_training

#: Microns per pixel of ``sample.synth`` tissue (its patches are cut at level 0).
SYNTH_MPP = 0.5


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train-cls",
        help="train the CAM classifier from patches labelled in their file names",
        description="Train a CAM classifier (stage 1) from patches named "
        "'<anything>-[tumor, stroma, normal].png' (e.g. 'a-[1, 0, 1].png') or listed in a CSV "
        "of file,labels. Every file is checked first; bad files are reported and skipped "
        "(--on-bad skip) or stop the run (--on-bad stop). The model is rewritten after each "
        "epoch; --resume continues an interrupted run.",
    )
    p.add_argument("data_dir", metavar="DATA_DIR", nargs="?",
                   help="patch folder (with --synthetic: where generated patches are cached)")
    add_training_arguments(p)
    p.add_argument("--synthetic", type=int, metavar="N",
                   help="train on N generated patches (sample.synth, seeded by --seed)")
    p.add_argument("--from-masks", metavar="DIR",
                   help="train on patches cut from DIR/img/*.png, each labelled only with the "
                   "classes that cover >= 2%% of it in DIR/mask/ (the masks never become "
                   "pixel labels); patches are written to DATA_DIR or the cache folder")
    p.add_argument("--patch-size", type=int, default=128, metavar="PX",
                   help="--from-masks patch size (default 128)")
    p.add_argument("--patch-stride", type=int, default=64, metavar="PX",
                   help="--from-masks patch stride (default 64)")
    add_params_arguments(p, TrainClsParams)
    p.set_defaults(func=run)


def synthetic_dir(n: int, seed: int, size: int = 224) -> Path:
    """Cache folder of generated patches (reused when the same N/seed are asked again)."""
    from ..cache import cache_dir

    return cache_dir(f"synthetic-n{n}-s{seed}-{size}px")


def ensure_synthetic(folder: Path, n: int, seed: int, size: int = 224) -> Path:
    """Write ``n`` synthetic patches into ``folder`` unless already there."""
    from ..sample.synth import write_patch_dataset
    from ..train.data import list_images

    if folder.is_dir() and len(list_images(folder)) == n:
        return folder
    if folder.is_dir() and list_images(folder):
        from .. import WsssError

        raise WsssError(f"'{folder}' holds other images; give --synthetic an empty folder")
    print(f"generating {n} synthetic patches in {folder} ...")  # noqa: T201
    return write_patch_dataset(folder, n, size=size, seed=seed)


def run(args: argparse.Namespace) -> int:
    from .. import WsssError
    from ..progress import run_to_end
    from ..train.cls import train_classifier
    from ..train.data import resolve_bad, scan_patches

    params = params_from_args(args, TrainClsParams)
    extra = {}
    if args.synthetic:
        data = Path(args.data_dir) if args.data_dir else synthetic_dir(args.synthetic, params.seed)
        ensure_synthetic(data, args.synthetic, params.seed)
        if params.mpp == 0:
            params = params.replace(mpp=SYNTH_MPP)
        extra["data"] = f"sample.synth: {args.synthetic} patches, seed {params.seed}"
    elif args.from_masks:
        from ..cache import cache_dir
        from ..train.weak import weak_patch_dir_name, write_weak_patches

        if not (16 <= args.patch_size <= 4096 and 1 <= args.patch_stride <= 4096):
            raise WsssError("--patch-size must be 16..4096 and --patch-stride 1..4096 px")
        data = Path(args.data_dir) if args.data_dir else cache_dir(
            weak_patch_dir_name(args.from_masks, args.patch_size, args.patch_stride))
        run_to_end(write_weak_patches(args.from_masks, data, args.patch_size,
                                      args.patch_stride), show=True, desc="patches")
        extra["data"] = (f"{Path(args.from_masks).resolve().name}: {args.patch_size} px "
                         f"patches, stride {args.patch_stride}, labelled by the classes "
                         f"covering >= 2 % of them")
    elif not args.data_dir:
        raise WsssError("give DATA_DIR (a patch folder), --synthetic N or --from-masks DIR")
    else:
        data = Path(args.data_dir)
        extra["data"] = str(data)
    report = scan_patches(data, csv_path=args.csv)
    print(report.summary())  # noqa: T201
    items = resolve_bad(report, args.on_bad)
    out = run_to_end(
        train_classifier(items, args.out, params, resume=args.resume, extra_meta=extra),
        show=True,
    )
    return finish_training(out, args)
