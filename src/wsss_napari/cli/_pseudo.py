"""``wsss-napari pseudo``: pseudo-masks for labelled training patches (stage 1 -> stage 2)."""

from __future__ import annotations

import argparse

from ..params import CamParams, PostprocParams
from ._params import add_params_arguments, params_from_args, postproc_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "pseudo",
        help="write pseudo-masks for training patches (CAM + post-processing)",
        description="For every patch of DATA_DIR: multi-scale CAMs of MODEL, post-processed "
        "with the patch's own labels suppressing absent classes, written as a palette PNG "
        "with the patch's name into MASK_DIR (input of train-seg). Post-processing: the "
        "model's recommended parameters ('tune --into-model') unless --config is given, "
        "then the command-line flags on top, as in 'predict'.",
    )
    p.add_argument("model", metavar="MODEL", help="CAM model file, or 'default'; a "
                   "segmentation model relabels the patches itself (self-training)")
    p.add_argument("data_dir", metavar="DATA_DIR", help="patch folder (labels in file names)")
    p.add_argument("--out", required=True, metavar="MASK_DIR", help="folder for the masks")
    p.add_argument("--csv", help="CSV of file,labels (paths relative to DATA_DIR)")
    p.add_argument("--exact-single", action="store_true",
                   help="single-label patches get their class on all tissue (background on "
                   "glass) without the model")
    p.add_argument("--cam-epithelium", type=float, default=0.0, metavar="WEIGHT",
                   help="CAM models: split tumor from stroma and normal in patches with two "
                   "or more labels by the epithelium prior (SHELL, package lavlab-shell), the "
                   "CAMs times its probability^WEIGHT; 0 = off (default: %(default)s). "
                   "--epithelium is the prior of a segmentation model's masks")
    p.add_argument("--on-bad", choices=("skip", "stop"), default="skip",
                   help="bad input files: skip them (report printed) or stop (default: skip)")
    p.add_argument("--config", help="JSON/YAML file with CamParams / PostprocParams sections")
    add_params_arguments(p, CamParams)
    add_params_arguments(p, PostprocParams)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..device import choose_device
    from ..models.checkpoint import load_model
    from ..progress import run_to_end
    from ..train.data import resolve_bad, scan_patches
    from ..train.pseudo import make_pseudo_masks

    cam = params_from_args(args, CamParams)
    model = load_model(args.model, device=choose_device(cam.device))
    post, source = postproc_from_args(args, model)
    print(f"post-processing: {source}")  # noqa: T201
    report = scan_patches(args.data_dir, csv_path=args.csv)
    print(report.summary())  # noqa: T201
    items = resolve_bad(report, args.on_bad)
    out = run_to_end(make_pseudo_masks(model, items, args.out, cam, post,
                                       exact_single=args.exact_single,
                                       cam_epithelium=args.cam_epithelium), show=True)
    print(f"wrote {len(items)} masks to {out}")  # noqa: T201
    return 0
