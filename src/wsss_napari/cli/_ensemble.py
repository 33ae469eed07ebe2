"""``wsss-napari ensemble SEG SEG... --out FILE``: several stage-2 models as one."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "ensemble",
        help="average segmentation models (e.g. train-seg with other seeds) into one file",
        description="Write one checkpoint that holds every given segmentation model and "
        "predicts the mean of their class probabilities. Everything that takes a "
        "segmentation model (predict, slide, batch, the widgets) takes it. The models must "
        "share decoder, encoder, classes, crop size, input scaling and mpp.",
    )
    p.add_argument("models", nargs="+", help="two or more train-seg .safetensors files")
    p.add_argument("--out", required=True, help="the ensemble's .safetensors file")
    p.add_argument("--half", action="store_true", help="store float16 weights (half the size)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..models.checkpoint import save_ensemble

    digest = save_ensemble(args.models, args.out, half=args.half)
    print(f"wrote {args.out} ({len(args.models)} members, sha256 {digest[:12]})")  # noqa: T201
    return 0
