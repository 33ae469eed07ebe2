"""``wsss-napari sample OUT.tif``: a synthetic H&E pyramidal TIFF (any size, bounded memory)."""

from __future__ import annotations

import argparse
import time


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "sample",
        help="write a synthetic H&E slide (pyramidal tiled TIFF) or a patch dataset",
        description="Write a procedural H&E-like slide with tumor, stroma, normal and glass "
        "regions as a tiled, JPEG-compressed pyramidal TIFF, e.g. 40000 x 40000 px in under a "
        "minute; or, with --patches N, a WSSS4LUAD-style folder of labelled patches.",
    )
    p.add_argument("out", help="output .tif file (or folder with --patches)")
    p.add_argument("--size", nargs=2, type=int, default=(8192, 8192), metavar=("H", "W"),
                   help="slide height and width in px (default: 8192 8192)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--mpp", type=float, default=0.5, help="microns per pixel (default: 0.5)")
    p.add_argument("--tile", type=int, default=512, help="tile edge in px (default: 512)")
    p.add_argument("--patches", type=int, default=0, metavar="N",
                   help="write N labelled 224-px patches (+ masks/) into OUT instead")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..sample import synth

    t0 = time.perf_counter()
    if args.patches:
        out = synth.write_patch_dataset(args.out, args.patches, seed=args.seed)
        what = f"{args.patches} patches"
    else:
        h, w = args.size
        out = synth.write_pyramidal_tiff(args.out, h, w, seed=args.seed, tile=args.tile,
                                         mpp=args.mpp)
        what = f"{w} x {h} px slide"
    print(f"wrote {what} to {out} in {time.perf_counter() - t0:.1f} s")  # noqa: T201
    return 0
