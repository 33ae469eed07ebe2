"""``wsss-napari eval``: IoU of predicted masks against ground truth (WSSS4LUAD metric)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from .. import WsssError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval",
        help="IoU / mIoU of predicted masks against ground truth",
        description="Compare every mask of PRED_DIR with the mask of the same name in GT_DIR "
        "(label values 0 tumor, 1 stroma, 2 normal, 3 background, 255 ignored). Confusion "
        "matrices are summed over all images. Prints per-class IoU, the challenge metric "
        "(mIoU over tumor/stroma/normal), mIoU with background, frequency-weighted IoU and "
        "the confusion matrix.",
    )
    p.add_argument("pred", metavar="PRED_DIR", help="folder of predicted masks (PNG)")
    p.add_argument("gt", metavar="GT_DIR", help="folder of ground-truth masks, same names")
    p.add_argument("--background-masks", metavar="DIR",
                   help="force background in the predictions where these 0/1 masks are 1 "
                   "(the challenge protocol; not needed if 'predict' already used them)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def evaluate_dirs(pred_dir: str | Path, gt_dir: str | Path,
                  background_dir: str | Path | None = None) -> dict:
    """Report (see ``metrics.iou_report``) over all masks of ``gt_dir``; adds ``images``."""
    from ..metrics import confusion_matrix, force_background, iou_report
    from ._predict import IMAGE_SUFFIXES, find_match, list_images, read_labels

    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    if not pred_dir.is_dir():
        raise WsssError(f"prediction folder '{pred_dir}' does not exist")
    gts = list_images(gt_dir)
    conf = np.zeros((4, 4), np.int64)
    for g in gts:
        gt = read_labels(g)
        pred = read_labels(find_match(pred_dir, g, "prediction"))
        if pred.shape != gt.shape:
            raise WsssError(f"'{g.name}': prediction is {pred.shape[1]} x {pred.shape[0]} px but "
                            f"the ground truth is {gt.shape[1]} x {gt.shape[0]} px")
        if background_dir:
            bg = read_labels(find_match(Path(background_dir), g, "background mask"))
            pred = force_background(pred, bg)
        try:
            conf += confusion_matrix(pred, gt)
        except WsssError as err:
            raise WsssError(f"'{g.name}': {err}") from err
    report = iou_report(conf)
    report["images"] = len(gts)
    stems = {g.stem for g in gts}
    unscored = sorted(f.name for f in pred_dir.iterdir()
                      if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
                      and f.stem not in stems)
    if unscored:
        report["unscored"] = unscored
    return report


def run(args: argparse.Namespace) -> int:
    from ..metrics import format_report

    report = evaluate_dirs(args.pred, args.gt, args.background_masks)
    unscored = report.get("unscored", [])
    if unscored:
        more = f" and {len(unscored) - 5} more" if len(unscored) > 5 else ""
        print(f"warning: {len(unscored)} prediction(s) have no ground truth in "  # noqa: T201
              f"'{args.gt}' and are not scored: {', '.join(unscored[:5])}{more}",
              file=sys.stderr)
    if args.json:
        print(json.dumps(report, indent=2))  # noqa: T201
    else:
        print(f"{report['images']} images, {report['pixels']} pixels")  # noqa: T201
        print(format_report(report))  # noqa: T201
    return 0
