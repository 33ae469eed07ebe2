"""``wsss-napari explain``: attention rollout maps of a transformer / hybrid CAM model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "explain",
        help="attention rollout maps of a transformer or hybrid model -> TIFF",
        description="Attention rollout (class-agnostic) and gradient-weighted rollout (one map "
        "per class) of a transformer or hybrid CNN-Transformer CAM model (e.g. trained with "
        "'train-cls --backbone wsss_hybrid_resnet18') over an image or a level-0 region of a "
        "slide. Writes a float32 TIFF (K, H, W) at level-0 resolution whose description holds "
        "the map names, method and region (JSON).",
    )
    p.add_argument("slide", metavar="SLIDE", help="image or slide file")
    p.add_argument("--model", required=True, help="CAM model checkpoint (.safetensors)")
    p.add_argument("--out", required=True, help="output TIFF (e.g. attention.tif)")
    p.add_argument("--method", choices=("rollout", "grad-rollout", "both"), default="both",
                   help="rollout, grad-rollout (class-specific) or both (default: both)")
    p.add_argument("--region", type=int, nargs=4, metavar=("Y", "X", "H", "W"),
                   help="only this level-0 rectangle (default: the whole image)")
    p.add_argument("--head-fusion", choices=("mean", "max", "min"), default="mean",
                   help="how rollout fuses heads (default: mean)")
    p.add_argument("--discard-ratio", type=float, default=0.0,
                   help="rollout: fraction of weakest attention entries dropped (default: 0)")
    p.add_argument("--start-layer", type=int, default=0,
                   help="first transformer layer of the product (default: 0)")
    p.add_argument("--device", default="cpu", help="auto, cuda, mps or cpu (default: cpu)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import tifffile

    from ..device import choose_device
    from ..io.atomic import atomic_path
    from ..io.slide import Slide
    from ..models.checkpoint import load_model
    from ..models.rollout import explain_region
    from ..region import Region

    model = load_model(args.model).to(choose_device(args.device)).eval()
    region = Region.from_cli(args.region) if args.region else None
    methods = ("rollout", "grad-rollout") if args.method == "both" else (args.method,)
    stacks, names = [], []
    with Slide.open(args.slide) as slide:
        for method in methods:
            maps, where = explain_region(slide, model, region, method, args.head_fusion,
                                         args.discard_ratio, args.start_layer)
            stacks.append(maps.maps)
            names += [n if method == "rollout" else f"grad-rollout {n}" for n in maps.names]
    desc = {"names": names, "methods": list(methods), "region": where.to_dict(),
            "model": str(args.model), "head_fusion": args.head_fusion,
            "discard_ratio": args.discard_ratio, "start_layer": args.start_layer}
    out = Path(args.out)
    with atomic_path(out) as tmp:
        tifffile.imwrite(tmp, np.concatenate(stacks).astype(np.float32),
                         description=json.dumps(desc), metadata=None)
    print(f"wrote {out}: {', '.join(names)}")  # noqa: T201
    return 0
