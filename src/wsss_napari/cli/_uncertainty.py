"""``wsss-napari uncertainty``: uncertainty map and ranked review queue of a CAM store."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import WsssError
from ..params import UncertaintyParams
from ._params import add_params_arguments, params_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "uncertainty",
        help="uncertainty map and review queue of a CAM store",
        description="From the cached CAMs of 'wsss-napari cam' (no network pass): the "
        "uncertainty map DIR/uncertainty.zarr (float32 'uncertainty' and uint8 'labels', "
        "attrs with the geometry: origin, downsample, mpp, slide) and a PNG preview; the "
        "ranked review queue DIR/queue.csv (rank, level-0 box y x h w, area_mm2, class, "
        "runner_up, score), DIR/queue.geojson (QuPath annotations, class probabilities "
        "and score as measurements) and DIR/review_queue.json (the queue with its "
        "decisions, reopened by the Review queue widget). Decisions of an earlier run in "
        "DIR are kept for the items that are still in the queue.",
    )
    p.add_argument("cams", metavar="CAMS.zarr", help="CAM store written by 'wsss-napari cam'")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--config", help="JSON/YAML file of uncertainty parameters")
    add_params_arguments(p, UncertaintyParams)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..inference.slide_cam import SlideCams
    from ..io.atomic import check_writable_dir
    from ..review_queue import QUEUE_FILE, ReviewQueue, slide_queue

    params = params_from_args(args, UncertaintyParams)
    src = Path(args.cams)
    if not src.exists():
        raise WsssError(f"no CAM store at '{src}' (make one with 'wsss-napari cam')")
    cams = SlideCams.open(src)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    check_writable_dir(out)
    old = None
    if (out / QUEUE_FILE).exists():  # refuses a queue built on another slide's maps
        old = ReviewQueue.load(out / QUEUE_FILE, cams.slide_id)
    queue, umap = slide_queue(cams, params)  # type: ignore[arg-type]
    if old is not None:
        ids = {it.id for it in queue.items}
        queue.decisions = {k: d for k, d in old.decisions.items() if k in ids}
    write_map(umap, out / "uncertainty.zarr", queue.slide_id)
    queue.write_csv(out / "queue.csv")
    queue.write_geojson(out / "queue.geojson")
    queue.save(out / QUEUE_FILE)
    total = sum(it.area_mm2 or 0.0 for it in queue.items)
    area = f", {total:.3g} mm²" if queue.geometry.mpp else ""
    print(f"{umap.metric.value} uncertainty of {tuple(umap.values.shape)} map -> "  # noqa: T201
          f"{out / 'uncertainty.zarr'}; {len(queue)} queue items{area} -> {out / 'queue.csv'}")
    return 0


def write_map(umap, path: Path, slide_id: dict) -> Path:
    """The uncertainty map as a zarr group (+ an 8-bit PNG preview beside it), atomically."""
    import os
    import shutil
    import tempfile

    import numpy as np
    import zarr
    from PIL import Image

    from ..io.atomic import atomic_path

    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent))
    try:
        g = zarr.open_group(str(tmp), mode="w")
        g.create_array("uncertainty", data=umap.values.astype(np.float32))
        g.create_array("labels", data=umap.labels)
        g.attrs.update({"format": "wsss-napari-uncertainty/1", "metric": umap.metric.value,
                        "geometry": umap.geometry.to_dict(), "slide": slide_id})
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    preview = path.with_suffix(".png")
    with atomic_path(preview) as tmp:
        Image.fromarray((umap.values * 255).round().astype(np.uint8)).save(tmp, format="PNG")
    return path
