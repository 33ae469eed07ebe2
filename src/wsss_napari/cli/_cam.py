"""``wsss-napari cam``: whole-slide (or region) CAMs into a zarr store, with a progress bar."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..params import CamParams, RunRecord
from ..region import CLI_REGION_METAVAR, Region
from ._params import add_params_arguments, params_from_args
from ._slide import add_slide_mpp_argument


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "cam",
        help="class activation maps of a slide -> zarr",
        description="Compute multi-scale CAMs of a whole slide (or a level-0 region) tile by "
        "tile into a zarr store: group 'cams' (C, h, w) unnormalised float32 maps, 'done' "
        "tile bitmap, attrs with the maps' geometry (level-0 origin y/x, downsample, mpp, "
        "slide), the region, class names and the model's recommended post-processing. An "
        "interrupted run resumes when the same command is repeated. <out>.run.json records "
        "parameters and model. 'wsss-napari export CAMS.zarr --out m.geojson' turns it into a "
        "tissue map.",
    )
    p.add_argument("slide", metavar="SLIDE", help="slide file (SVS, TIFF, OME-TIFF, PNG...)")
    p.add_argument("--model", default="default",
                   help="CAM model checkpoint (.safetensors) or 'default' (default: default)")
    p.add_argument("--out", required=True, help="output zarr store (e.g. CAMS.zarr)")
    p.add_argument("--region", type=float, nargs=4, metavar=CLI_REGION_METAVAR,
                   help="only this level-0 rectangle: top-left Y X, height H, width W "
                   "(default: the whole slide)")
    p.add_argument("--config", help="JSON/YAML file of CAM parameters")
    add_slide_mpp_argument(p)
    add_params_arguments(p, CamParams)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..inference.slide_cam import slide_cams
    from ..io.atomic import atomic_write_text
    from ..io.slide import Slide
    from ..models.checkpoint import load_model
    from ..progress import run_to_end
    from ..stain import slide_for_model

    params = params_from_args(args, CamParams)
    region = None if args.region is None else Region.from_cli(args.region)
    model = load_model(args.model)
    with Slide.open(args.slide, mpp=args.slide_mpp) as opened:
        slide = slide_for_model(opened, model)  # normalised like the training data, if it was
        result = run_to_end(slide_cams(slide, model, params, region=region, out=args.out),
                            show=True, desc="CAM tiles")
        record = RunRecord.make(params, model_name=str(args.model),
                                model_hash=getattr(model, "file_hash", ""),
                                slide=str(Path(args.slide).resolve()), slide_mpp=slide.mpp)
    atomic_write_text(Path(str(args.out).rstrip("/") + ".run.json"), record.to_json())
    # result.warnings (e.g. an unknown mpp) were logged once by slide_cams already
    print(f"CAMs: {result.path}  shape {tuple(result.raw.shape)}  "  # noqa: T201
          f"downsample {result.downsample:g}  level-0 origin y {result.geometry.y:g} "
          f"x {result.geometry.x:g}")
    print("image-level scores: " + ", ".join(  # noqa: T201
        f"{n} {s:.3f}" for n, s in zip(result.class_names, result.scores, strict=True)))
    return 0
