"""``wsss-napari export``: write a corrected mask as OME-TIFF, PNG, GeoJSON or RLE CSV."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .. import WsssError
from ..params import ExportParams, RunRecord
from ._params import add_params_arguments, params_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export",
        help="export a corrected mask (ome-tiff, png, geojson, rle)",
        description="Export a label mask -- a PNG/TIFF mask, an edits.zarr edit store or a "
        "mask zarr -- as a pyramidal OME-TIFF, a WSSS4LUAD palette PNG, QuPath GeoJSON or an "
        "RLE CSV. <out>.run.json records the parameters and model that made it.",
    )
    p.add_argument("mask_source", metavar="MASK_SOURCE",
                   help="PNG/TIFF mask, edits.zarr edit store, or mask zarr")
    p.add_argument("--out", required=True, help="output file (format from --format or suffix)")
    p.add_argument("--base", help="for an edit store: the mask its edits correct "
                   "(without it only edited pixels are exported)")
    p.add_argument("--mpp", type=float, help="slide microns per pixel at level 0 "
                   "(default: from the source, if it knows)")
    p.add_argument("--downsample", type=float,
                   help="mask pixel size in level-0 pixels (default: from the source, or 1)")
    p.add_argument("--origin", type=float, nargs=2, metavar=("X", "Y"),
                   help="level-0 position of the mask's top-left corner (default 0 0)")
    p.add_argument("--record", help="run.json of the job that made the mask (params, model "
                   "hash), copied into the export's record")
    p.add_argument("--image-id", help="RLE: the image id (default: the output's name)")
    p.add_argument("--config", help="JSON/YAML file of export parameters")
    add_params_arguments(p, ExportParams)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..io.export import export_mask, format_for_path, open_mask_source

    params = params_from_args(args, ExportParams)
    if args.export__format is None:
        params = params.replace(format=format_for_path(args.out))
    mask, meta = open_mask_source(args.mask_source, base=args.base)
    record = RunRecord()
    if args.record:
        try:
            record = RunRecord.from_dict(json.loads(Path(args.record).read_text()))
        except (OSError, ValueError, TypeError) as err:
            raise WsssError(f"cannot read the run record '{args.record}': {err}") from err
    mpp = args.mpp if args.mpp is not None else meta.get("mpp", record.slide_mpp)
    out = export_mask(
        mask, args.out, params, mpp=mpp,
        downsample=args.downsample or meta.get("downsample", 1.0),
        origin=tuple(args.origin or meta.get("origin", (0.0, 0.0))),
        record=record, image_id=args.image_id,
        class_names=tuple(meta.get("class_names") or ()) or _default_names(),
    )
    print(f"wrote {out} ({params.format.value}) and {out}.run.json")  # noqa: T201
    return 0


def _default_names() -> tuple[str, ...]:
    from ..classes import LABEL_NAMES

    return LABEL_NAMES
