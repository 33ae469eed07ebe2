"""``wsss-napari slide``: one whole slide -> mask OME-TIFF, QuPath GeoJSON and tissue report."""

from __future__ import annotations

import argparse

from ..params import CamParams, PostprocParams
from ..region import CLI_REGION_METAVAR
from ._params import add_params_arguments, params_from_args, postproc_from_args


def _mpp(text: str) -> float:
    from ..io.tiff import MPP_RANGE

    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not MPP_RANGE[0] <= v <= MPP_RANGE[1]:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a microns per pixel in {MPP_RANGE[0]:g}-{MPP_RANGE[1]:g} "
            "(0.25 = 40x, 0.5 = 20x, 1.0 = 10x)")
    return v


def add_slide_mpp_argument(p: argparse.ArgumentParser) -> None:
    """``--slide-mpp UM`` of ``slide``, ``batch`` and ``cam``."""
    p.add_argument("--slide-mpp", type=_mpp, metavar="UM",
                   help="level-0 microns per pixel of the slide(s), over what the file says; "
                   "needed when the file has none (else level 0 is read as if it were at the "
                   "model's mpp, with a warning)")


def add_job_arguments(p: argparse.ArgumentParser) -> None:
    """Model, parameter and region flags shared by ``slide`` and ``batch``."""
    from ._predict import add_mask_from_arguments

    p.add_argument("--model", default="default",
                   help="CAM (or segmentation) checkpoint (.safetensors) or 'default' "
                   "(default: default)")
    add_mask_from_arguments(p)
    p.add_argument("--params", metavar="FILE",
                   help="post-processing parameters (JSON/YAML, e.g. saved by the tuning "
                   "widget or 'wsss-napari tune'); default: the model's recommended ones, as "
                   "in the tuning widget")
    p.add_argument("--cam-params", metavar="FILE", help="CAM parameters (JSON/YAML)")
    p.add_argument("--region", type=float, nargs=4, metavar=CLI_REGION_METAVAR,
                   help="only this level-0 rectangle of each slide (default: the whole slide)")
    add_slide_mpp_argument(p)
    p.add_argument("--cache-dir", metavar="DIR",
                   help="CAM cache folder (default: $WSSS_CACHE_DIR or ~/.cache/wsss-napari)")
    p.add_argument("--force", action="store_true",
                   help="recompute slides already done with the same model and parameters")
    add_params_arguments(p, PostprocParams)
    add_params_arguments(p, CamParams)


def spec_from_args(args: argparse.Namespace):
    """The :class:`~wsss_napari.slide_job.SlideSpec` the flags describe (post-processing
    resolved: file and flags over the model's recommendation)."""
    from ..region import Region
    from ..slide_job import SlideSpec

    cam = params_from_args(args, CamParams, config_attr="cam_params")
    post, _ = postproc_from_args(args, args.model, config_attr="params")
    region = Region.from_cli(args.region) if args.region else None
    return SlideSpec(model=str(args.model), cam=cam, postproc=post, region=region,
                     cache_dir=args.cache_dir, mask_from=args.mask_from,
                     seg_model=args.seg_model, slide_mpp=args.slide_mpp)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "slide",
        help="one whole slide -> mask OME-TIFF, GeoJSON and tissue report",
        description="The mask of a whole slide, from the segmentation model (the default "
        "when the shipped one is installed; --mask-from) or from its CAMs (cached), "
        "post-processed exactly as the tuning "
        "widget does for the same model and parameters, written to OUT_DIR as <slide>.mask."
        "ome.tif (pyramidal), <slide>.geojson (QuPath, level-0 px), <slide>.report.json/.csv "
        "(area per class in mm², tumor-stroma ratio, model and parameter hashes) and "
        "<slide>.done.json (written last). A rerun with the same slide, model and "
        "parameters skips the slide unless --force.",
    )
    p.add_argument("slide", metavar="SLIDE", help="slide file (SVS, TIFF, OME-TIFF, PNG...)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    add_job_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..progress import run_to_end
    from ..slide_job import check_out_dir, run_slide

    spec = spec_from_args(args)
    check_out_dir(args.out, create=False)
    res = run_to_end(run_slide(args.slide, args.out, spec, force=args.force), show=True,
                     desc="slide")
    for w in res.warnings:
        print(f"warning: {w}")  # noqa: T201
    print(summary_line(res))  # noqa: T201
    print(f"  mask from: {res.report.mask_from or '?'} (model {res.report.model_hash[:12]})")  # noqa: T201
    for path in (res.outputs.mask, res.outputs.geojson, res.outputs.report_json):
        print(f"  {path}")  # noqa: T201
    return 0


def summary_line(res) -> str:
    r = res.report
    if r.area_unit == "mm2":
        areas = ", ".join(f"{k} {v:.3f} mm²" for k, v in r.area_mm2.items())
    else:
        areas = ", ".join(f"{k} {v:.0f} px" for k, v in r.area_px.items()) + \
            " (slide has no mpp: areas in level-0 pixels)"
    tsr = "n/a" if r.tumor_stroma_ratio is None else (
        f"{r.tumor_stroma_ratio:.3f} ({'stroma-high' if r.stroma_high else 'stroma-low'})")
    return f"{res.status}: {res.slide}: {areas}; tumor-stroma ratio {tsr}"
