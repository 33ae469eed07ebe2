"""``wsss-napari train-seg``: train the segmentation network on pseudo-masks (stage 2)."""

from __future__ import annotations

import argparse

from ..models.families import SEG_ARCHS
from ..params import TrainSegParams
from ._params import add_params_arguments, params_from_args
from ._training import add_training_arguments, finish_training


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train-seg",
        help="train a segmentation network on (pseudo-)masks",
        description="Train a segmentation network (timm encoder + one of the decoders "
        f"{', '.join(SEG_ARCHS)}) on the patches of DATA_DIR and the masks of MASK_DIR "
        "(same file names, e.g. from "
        "'wsss-napari pseudo'). Loss: cross-entropy (255 = ignore) + Dice, or one-vs-rest "
        "BCE + Dice (--loss bce+dice). The model works "
        "with 'wsss-napari predict' like a CAM model.",
    )
    p.add_argument("data_dir", metavar="DATA_DIR", help="patch folder")
    p.add_argument("mask_dir", metavar="MASK_DIR", help="mask folder (palette/grey PNG, 0..3)")
    add_training_arguments(p)
    add_params_arguments(p, TrainSegParams)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..progress import run_to_end
    from ..train.data import resolve_bad, scan_patches
    from ..train.seg import train_segmenter

    params = params_from_args(args, TrainSegParams)
    report = scan_patches(args.data_dir, csv_path=args.csv, mask_dir=args.mask_dir,
                          require_masks=True)
    report.problems = [p for p in report.problems if p.path is not None]
    print(report.summary())  # noqa: T201
    items = resolve_bad(report, args.on_bad)
    out = run_to_end(train_segmenter(items, None, args.out, params, resume=args.resume,
                                     extra_meta={"data": str(args.data_dir),
                                                 "masks": str(args.mask_dir)}),
                     show=True)
    return finish_training(out, args)
