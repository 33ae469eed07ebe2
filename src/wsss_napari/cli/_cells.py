"""``wsss-napari cells``: per-cell labels (CAM x nucleus instances) -> cells.csv + GeoJSON."""

from __future__ import annotations

import argparse

from ..params import CellParams
from ._params import add_params_arguments, params_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "cells",
        help="per-cell classes from CAMs and nuclei -> cells.csv, cells.geojson",
        description="Label every nucleus of a slide with the class whose CAM is highest over "
        "it (plus a confidence). Nuclei come from the built-in segmentation (haematoxylin "
        "from colour deconvolution, threshold, distance-transform watershed) or from "
        "--instances (a level-0 label image from stardist, cellpose, a napari Labels layer). "
        "Runs tile by tile; a cell on a tile border is counted once. Writes OUT/cells.csv "
        "(id, centroid in level-0 px and microns, area, class, confidence, mean CAMs) and "
        "OUT/cells.geojson (QuPath detections with their classification).",
    )
    p.add_argument("slide", metavar="SLIDE", help="slide or image file")
    p.add_argument("--cams", required=True, help="CAM store of the slide ('wsss-napari cam')")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--region", type=int, nargs=4, metavar=("Y", "X", "H", "W"),
                   help="only this level-0 rectangle (default: the CAMs' extent)")
    p.add_argument("--instances", metavar="LABELS",
                   help="level-0 nucleus label image (TIFF/PNG; 0 = none) instead of the "
                   "built-in segmentation")
    p.add_argument("--config", help="JSON/YAML file of cell parameters")
    add_params_arguments(p, CellParams)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import numpy as np

    from .. import WsssError
    from ..cells import slide_cells
    from ..inference.slide_cam import SlideCams
    from ..io.slide import Slide
    from ..progress import run_to_end
    from ..region import Region

    params = params_from_args(args, CellParams)
    if not Path(args.cams).exists():
        raise WsssError(f"no CAM store '{args.cams}' (make one with 'wsss-napari cam')")
    cams = SlideCams.open(args.cams)
    instances = None
    if args.instances:
        import tifffile
        from PIL import Image

        path = Path(args.instances)
        try:
            instances = (tifffile.imread(path) if path.suffix.lower() in (".tif", ".tiff")
                         else np.asarray(Image.open(path)))
        except Exception as err:  # noqa: BLE001 - any decoding error is a user error here
            raise WsssError(f"cannot read instance labels '{path}': {err}") from err
        if instances.ndim != 2 or not np.issubdtype(instances.dtype, np.integer):
            raise WsssError(f"instance labels must be a 2-D integer image, not "
                            f"{instances.dtype} {instances.shape}")
    region = Region.from_cli(args.region) if args.region else None
    with Slide.open(args.slide) as slide:
        res = run_to_end(slide_cells(slide, cams, args.out, params, region, instances),
                         show=True, desc="cells")
    rate = res.n_cells / max(res.seconds, 1e-9)
    print(f"{res.n_cells} cells ({', '.join(f'{k} {v}' for k, v in res.per_class.items())}), "  # noqa: T201
          f"{rate:.0f} nuclei/s -> {res.csv_path}, {res.geojson_path}")
    return 0
