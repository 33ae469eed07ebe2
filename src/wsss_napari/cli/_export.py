"""``wsss-napari export``: write a tissue map as OME-TIFF, PNG, GeoJSON or RLE CSV.

The source is a mask file, an edit store, a mask zarr, or a CAM store (post-processed here).
Every output is placed on the slide by the source's geometry; a source that does not say
where it lies is refused unless the user states it (``--downsample``/``--region-origin`` or
``--assume-level0``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .. import WsssError
from ..params import ExportParams, PostprocParams, RunRecord
from ..region import MaskGeometry
from ._params import add_params_arguments, params_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export",
        help="export a tissue map (ome-tiff, png, geojson, rle)",
        description="Export a label mask -- a PNG/TIFF mask, an edits.zarr edit store, a "
        "mask zarr, or a CAMS.zarr store from 'wsss-napari cam' (post-processed with the "
        "model's recommended parameters, or --params) -- as a pyramidal OME-TIFF, a WSSS4LUAD "
        "palette PNG, QuPath GeoJSON or an RLE CSV, in level-0 slide coordinates. Every output "
        "records where it lies on the slide; <out>.run.json records the parameters and model "
        "that made it.",
    )
    p.add_argument("mask_source", metavar="MASK_SOURCE",
                   help="PNG/TIFF mask, edits.zarr edit store, mask zarr, or CAM store")
    p.add_argument("--out", required=True, help="output file (format from --format or suffix)")
    p.add_argument("--base", help="for an edit store: the mask its edits correct "
                   "(without it only edited pixels are exported)")
    p.add_argument("--params", metavar="FILE", help="for a CAM store: post-processing "
                   "parameters (JSON/YAML); default: the model's recommended ones stored with "
                   "the CAMs, else the defaults")
    p.add_argument("--slide", help="for a CAM store: the slide file, for glass detection "
                   "(default: the file the CAMs were computed from, if it is still there)")
    geo = p.add_argument_group(
        "geometry", "where the mask lies on the slide; only for a source that does not say "
        "(an older file, a mask made elsewhere). Sources that carry it are refused a "
        "different one.")
    geo.add_argument("--downsample", type=float, metavar="D",
                     help="mask pixel size in level-0 pixels")
    geo.add_argument("--region-origin", type=float, nargs=2, metavar=("Y", "X"),
                     help="level-0 position of the mask's top-left corner (default 0 0)")
    geo.add_argument("--assume-level0", action="store_true",
                     help="the mask is the whole slide at level 0 (downsample 1, origin 0 0)")
    geo.add_argument("--mpp", type=float, help="slide microns per pixel at level 0 "
                     "(default: from the source, if it knows)")
    p.add_argument("--record", help="run.json of the job that made the mask (params, model "
                   "hash), copied into the export's record")
    p.add_argument("--image-id", help="RLE: the image id (default: the output's name)")
    p.add_argument("--config", help="JSON/YAML file of export parameters")
    add_params_arguments(p, ExportParams)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..corrections.sources import open_mask_source
    from ..inference.slide_cam import is_cam_store
    from ..io.export import export_mask, format_for_path

    params = params_from_args(args, ExportParams)
    if args.export__format is None:
        params = params.replace(format=format_for_path(args.out))
    record = _read_record(args.record)
    if is_cam_store(args.mask_source):
        mask, geometry, class_names, record = _from_cam_store(args, record)
    else:
        if args.params or args.slide:
            raise WsssError("--params and --slide apply to a CAM store (from 'wsss-napari cam')"
                            f", and '{args.mask_source}' is a mask")
        mask, meta = open_mask_source(args.mask_source, base=args.base)
        geometry, class_names = meta.get("geometry"), tuple(meta.get("class_names") or ())
    geometry = stated_geometry(geometry, args, record, args.mask_source)
    out = export_mask(
        mask, args.out, params, geometry=geometry, record=record, image_id=args.image_id,
        class_names=class_names or _default_names(),
    )
    print(f"wrote {out} ({params.format.value}, level-0 origin y {geometry.y:g} x "  # noqa: T201
          f"{geometry.x:g}, downsample {geometry.downsample:g}) and {out}.run.json")
    return 0


def stated_geometry(geometry: MaskGeometry | None, args: argparse.Namespace,
                    record: RunRecord, source: str) -> MaskGeometry:
    """The source's geometry, or the one the flags state when the source does not say."""
    stated = args.assume_level0 or args.downsample is not None or args.region_origin is not None
    if args.assume_level0 and (args.downsample is not None or args.region_origin is not None):
        raise WsssError("--assume-level0 means downsample 1 at origin 0 0: do not combine it "
                        "with --downsample or --region-origin")
    if geometry is None:
        if not stated:
            raise WsssError(f"'{source}' does not say where it lies on the slide (no geometry):"
                            " state it with --downsample D [--region-origin Y X], or "
                            "--assume-level0 if it is the whole slide at level 0")
        y, x = args.region_origin or (0.0, 0.0)
        mpp = args.mpp if args.mpp is not None else record.slide_mpp
        return MaskGeometry(y=y, x=x, downsample=args.downsample or 1.0, mpp=mpp,
                            slide=record.slide)
    if stated:
        ds = 1.0 if args.assume_level0 else args.downsample
        origin = (0.0, 0.0) if args.assume_level0 else args.region_origin
        if (ds is not None and ds != geometry.downsample) or \
                (origin is not None and tuple(origin) != (geometry.y, geometry.x)):
            raise WsssError(f"'{source}' lies at level-0 y {geometry.y:g} x {geometry.x:g} "
                            f"with downsample {geometry.downsample:g}; drop the geometry flags "
                            "(they are for masks that do not say)")
    if args.mpp is not None:
        if geometry.mpp is not None and abs(geometry.mpp - args.mpp) > 1e-9:
            raise WsssError(f"'{source}' says the slide has {geometry.mpp:g} µm/px, not "
                            f"{args.mpp:g}; drop --mpp")
        geometry = MaskGeometry(y=geometry.y, x=geometry.x, downsample=geometry.downsample,
                                mpp=args.mpp, slide=geometry.slide)
    return geometry


def _from_cam_store(args: argparse.Namespace,
                    record: RunRecord) -> tuple[Any, MaskGeometry, tuple, RunRecord]:
    from ..inference.slide_cam import PENDING, SlideCams
    from ..inference.slide_mask import open_slide_of, slide_mask, stored_params
    from ..io.slide import Slide

    if args.base:
        raise WsssError("--base applies to an edit store, not to a CAM store")
    cams = SlideCams.open(args.mask_source)
    pending = int((cams.done == PENDING).sum())
    if pending:
        raise WsssError(f"'{args.mask_source}' is unfinished ({pending} of {cams.done.size} "
                        "tiles not computed): repeat the 'wsss-napari cam' command to finish it")
    if args.params:
        post, source = PostprocParams.from_file(args.params), f"from {args.params}"
    else:
        post = stored_params(cams)
        source = "recommended by the model" if post is not None else "defaults"
        post = post or PostprocParams()
    if args.slide:
        slide, why = Slide.open(args.slide), None
    else:
        slide, why = open_slide_of(cams)
    print(f"post-processing: {source}" + ("" if slide is not None else  # noqa: T201
          f"; no glass detection ({why}: pass --slide)"))
    try:
        mask, geometry = slide_mask(cams, post, slide=slide)
    finally:
        if slide is not None:
            slide.close()
    if not record.model_hash:  # the record 'wsss-napari cam' wrote beside the store
        side = Path(str(args.mask_source).rstrip("/") + ".run.json")
        if side.is_file():
            record = _read_record(str(side))
    rec = record.to_dict()
    rec["params"] = {**rec.get("params", {}), "postproc": post.to_dict()}
    rec["slide"] = rec.get("slide") or geometry.slide
    rec["slide_mpp"] = rec.get("slide_mpp") or geometry.mpp
    return mask, geometry, (), RunRecord.from_dict(rec)


def _read_record(path: str | None) -> RunRecord:
    if not path:
        return RunRecord()
    try:
        return RunRecord.from_dict(json.loads(Path(path).read_text()))
    except (OSError, ValueError, TypeError) as err:
        raise WsssError(f"cannot read the run record '{path}': {err}") from err


def _default_names() -> tuple[str, ...]:
    from ..classes import LABEL_NAMES

    return LABEL_NAMES
