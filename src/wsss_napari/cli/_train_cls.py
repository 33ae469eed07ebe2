"""``wsss-napari train-cls``: train the CAM classifier from patch-level labels (stage 1)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..params import TrainClsParams
from ._params import add_params_arguments, params_from_args

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
    p.add_argument("--out", required=True, help="model file to write (.safetensors)")
    p.add_argument("--csv", help="CSV of file,labels (paths relative to DATA_DIR)")
    p.add_argument("--resume", action="store_true",
                   help="continue from <out>.state.safetensors (left by an interrupted run)")
    p.add_argument("--on-bad", choices=("skip", "stop"), default="skip",
                   help="bad input files: skip them (report printed) or stop (default: skip)")
    p.add_argument("--synthetic", type=int, metavar="N",
                   help="train on N generated patches (sample.synth, seeded by --seed)")
    p.add_argument("--half", action="store_true", help="store the final weights as float16")
    p.add_argument("--keep-state", action="store_true",
                   help="keep <out>.state.safetensors after a finished run (default: removed)")
    p.add_argument("--config", help="JSON/YAML file of training parameters")
    add_params_arguments(p, TrainClsParams)
    p.set_defaults(func=run)


def synthetic_dir(n: int, seed: int, size: int = 224) -> Path:
    """Cache folder of generated patches (reused when the same N/seed are asked again)."""
    import os

    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "wsss-napari"
    return base / f"synthetic-n{n}-s{seed}-{size}px"


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
    from ..train.loop import state_path

    params = params_from_args(args, TrainClsParams)
    extra = {}
    if args.synthetic:
        data = Path(args.data_dir) if args.data_dir else synthetic_dir(args.synthetic, params.seed)
        ensure_synthetic(data, args.synthetic, params.seed)
        if params.mpp == 0:
            params = params.replace(mpp=SYNTH_MPP)
        extra["data"] = f"sample.synth: {args.synthetic} patches, seed {params.seed}"
    elif not args.data_dir:
        raise WsssError("give DATA_DIR (a patch folder) or --synthetic N")
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
    if args.half:
        from ..models.checkpoint import load_model, save_model

        save_model(load_model(out), out, half=True)
    if not args.keep_state:
        state_path(out).unlink(missing_ok=True)
    print(f"wrote {out}")  # noqa: T201
    return 0
