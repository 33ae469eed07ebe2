"""``wsss-napari info SLIDE``: what a slide file holds (levels, scale, tiles, compression)."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "info",
        help="describe a slide: format, pyramid levels, microns per pixel, tiles",
        description="Open a slide lazily and describe it (nothing is decoded but one tile).",
    )
    p.add_argument("slide", help="SVS, OME-TIFF, TIFF, PNG or JPEG file")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..io.slide import Slide

    with Slide.open(args.slide) as slide:
        info = slide.info()
    if args.json:
        print(json.dumps(info, indent=2))  # noqa: T201
        return 0
    mpp = (f"{info['mpp']:.4g} um/px (from {info['mpp_source']})" if info["mpp"]
           else "unknown (the file does not say; scale shown in pixels)")
    tile = info.get("tile_size")
    lines = [
        f"file         {info['path']}",
        f"format       {info['format']}  "
        f"({info.get('dtype', 'uint8')}, axes {info.get('axes', 'YXS')})",
        f"size         {info['shape'][1]} x {info['shape'][0]} px (W x H)",
        f"mpp          {mpp}",
        f"tiles        {f'{tile[1]} x {tile[0]}' if tile else 'none (stripped or in-memory)'}",
        f"compression  {info.get('compression')}",
        f"associated   {', '.join(info.get('associated') or []) or 'none'}",
        "levels:",
    ]
    for i, lv in enumerate(info["levels"]):
        lazy = "  (computed on demand)" if lv["lazy"] else ""
        h, w = lv["shape"]
        lines.append(f"  {i}: {w:>7} x {h:<7} downsample {lv['downsample']:g}{lazy}")
    if info.get("pyramid_cache"):
        lines.append(f"pyramid cache {info['pyramid_cache']}")
    print("\n".join(lines))  # noqa: T201
    return 0
