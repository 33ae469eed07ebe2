"""``wsss-napari tune``: grid search of the post-processing against ground truth."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..params import CamParams, PostprocParams
from ._params import add_params_arguments, params_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "tune",
        help="grid-search the post-processing parameters against ground truth",
        description="Compute CAMs of every image once, then grid-search the post-processing "
        "(the background exponent first, then each other parameter around the best) for the "
        "best mIoU over tumor/stroma/normal. Prints the table and writes the best parameters "
        "to a file that 'predict --params' and the napari widget load; with --into-model, "
        "also into the model itself as its recommended post-processing. --synthetic N tunes "
        "on N generated images with exact masks instead of IMAGES_DIR / GT_DIR.",
    )
    p.add_argument("model", metavar="MODEL", help="CAM checkpoint (.safetensors) or 'default'")
    p.add_argument("images", metavar="IMAGES_DIR", nargs="?", help="folder of RGB images")
    p.add_argument("gt", metavar="GT_DIR", nargs="?",
                   help="folder of ground-truth masks, same names")
    p.add_argument("--synthetic", type=int, default=0, metavar="N",
                   help="tune on N generated synthetic images (sample.synth.make_tissue) with "
                   "their exact masks instead of IMAGES_DIR / GT_DIR")
    p.add_argument("--synthetic-size", type=int, default=768, metavar="PX",
                   help="edge of the synthetic images (default: 768)")
    p.add_argument("--synthetic-seed", type=int, default=1000, metavar="S",
                   help="seed of the first synthetic image, then S+1, ... (default: 1000)")
    p.add_argument("--into-model", metavar="MODEL",
                   help="store the best parameters in this checkpoint (or 'default') as its "
                   "recommended post-processing, which predict and the widgets then use")
    p.add_argument("--background-masks", metavar="DIR",
                   help="folder of 0/1 background masks (forced to class 3, the challenge way)")
    p.add_argument("--out", default="best.yaml", help="best parameters file (default: best.yaml)")
    p.add_argument("--grid", metavar="FILE",
                   help="JSON/YAML mapping parameter -> list of values (default: built-in grid)")
    p.add_argument("--top", type=int, default=20, help="rows of the table to print (default 20)")
    p.add_argument("--params", metavar="FILE", help="starting post-processing parameters")
    p.add_argument("--cam-params", metavar="FILE", help="CAM parameters (JSON/YAML)")
    add_params_arguments(p, PostprocParams)
    add_params_arguments(p, CamParams)
    p.set_defaults(func=run)


def load_grid(path: str | None) -> dict:
    from .. import WsssError
    from ..tune import default_grid

    if not path:
        return default_grid()
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())  # JSON is YAML too
    except (OSError, yaml.YAMLError) as err:
        raise WsssError(f"cannot read grid file '{path}': {err}") from err
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise WsssError(f"grid file '{path}' must map parameter names to lists of values")
    return data


def run(args: argparse.Namespace) -> int:
    from .. import WsssError
    from ..models.checkpoint import load_model
    from ..progress import run_to_end
    from ..tune import grid_search

    base = params_from_args(args, PostprocParams, config_attr="params")
    cam = params_from_args(args, CamParams, config_attr="cam_params")
    grid = load_grid(args.grid)
    if args.synthetic:
        if args.images or args.gt:
            raise WsssError("give either IMAGES_DIR GT_DIR or --synthetic N, not both")
        if not 64 <= args.synthetic_size <= 8192:
            raise WsssError("--synthetic-size must be within 64..8192 px")
    elif not (args.images and args.gt):
        raise WsssError("give IMAGES_DIR and GT_DIR (images and their masks) or --synthetic N")
    model = load_model(args.model)
    if getattr(model.config, "kind", "cam") != "cam":
        raise WsssError("tuning the post-processing needs a CAM model (this one segments)")
    if args.synthetic:
        samples = run_to_end(synthetic_samples(model, cam, args.synthetic, args.synthetic_size,
                                               args.synthetic_seed), show=True, desc="CAMs")
        data = (f"sample.synth.make_tissue: {args.synthetic} images of {args.synthetic_size} "
                f"px, seeds {args.synthetic_seed}..{args.synthetic_seed + args.synthetic - 1}")
    else:
        samples = run_to_end(folder_samples(model, cam, args), show=True, desc="CAMs")
        data = str(args.images)
    result = run_to_end(grid_search(samples, grid, base=base), show=True, desc="grid search")
    print(result.table(top=args.top))  # noqa: T201
    print()  # noqa: T201
    print(result.summary())  # noqa: T201
    path = result.save(args.out)
    print(f"best parameters written to {path}")  # noqa: T201
    if args.into_model:
        from ..models.checkpoint import with_recommended_postproc

        info = {"data": data, "miou": round(float(result.report["miou"]), 4),
                "cam_scales": list(cam.scales), "tuned_model_hash": model.file_hash}
        digest = with_recommended_postproc(args.into_model, result.best, info=info)
        print(f"recommended post-processing stored in {args.into_model} "  # noqa: T201
              f"(sha256 {digest[:16]})")
    return 0


def synthetic_samples(model, cam: CamParams, n: int, size: int, seed: int):
    """CAMs of ``n`` generated images (seeds ``seed``, ``seed + 1``, ...) with exact masks."""
    from ..inference.multiscale import multiscale_cam
    from ..progress import Progress
    from ..sample.synth import make_tissue
    from ..tune import TuneSample

    samples = []
    for i in range(n):
        rgb, gt = make_tissue(size, size, seed=seed + i)
        res = multiscale_cam(model, rgb, cam)
        samples.append(TuneSample(cams=res.cams, gt=gt, image=rgb, scores=res.scores,
                                  name=f"synthetic seed {seed + i}"))
        yield Progress("cams", i + 1, n, {"image": f"seed {seed + i}"})
    return samples


def folder_samples(model, cam: CamParams, args: argparse.Namespace):
    """CAMs of every image of ``args.images`` with the mask of the same name in ``args.gt``."""
    from .. import WsssError
    from ..inference.multiscale import multiscale_cam
    from ..progress import Progress
    from ..tune import TuneSample
    from ._predict import find_match, list_images, load_background, read_labels, read_rgb

    images = list_images(args.images)
    samples = []
    for i, f in enumerate(images):
        rgb = read_rgb(f)
        gt = read_labels(find_match(Path(args.gt), f, "ground-truth mask"))
        if gt.shape != rgb.shape[:2]:
            raise WsssError(f"'{f.name}': ground truth {gt.shape} and image "
                            f"{rgb.shape[:2]} differ in size")
        res = multiscale_cam(model, rgb, cam)
        samples.append(TuneSample(cams=res.cams, gt=gt, image=rgb, scores=res.scores,
                                  background=load_background(args.background_masks, f),
                                  name=f.name))
        yield Progress("cams", i + 1, len(images), {"image": f.name})
    return samples
