"""``wsss-napari fine-tune``: a model fine-tuned on a slide's corrections, as a new version."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..params import FinetuneParams
from ._params import add_params_arguments, params_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "fine-tune",
        help="fine-tune a model on saved corrections -> a new model version",
        description="Fine-tune MODEL on the corrections painted in napari (the slide's edit "
        "store, <slide>.wsss/edits.zarr) and save it in OUT_DIR as the next version "
        "<name>-v<N>-<hash8>.safetensors, exactly as the review widget does: the parent's "
        "hash and what it learned from (slide, level-0 regions, labelled pixels, parameters) "
        "are recorded in the checkpoint; nothing is overwritten.",
    )
    p.add_argument("model", metavar="MODEL", help="checkpoint (.safetensors) or 'default'")
    p.add_argument("--edits", required=True, metavar="EDITS",
                   help="edit store of a slide (<slide>.wsss/edits.zarr)")
    p.add_argument("--out", required=True, metavar="OUT_DIR",
                   help="folder of model versions (the widget uses <slide>.wsss/models)")
    p.add_argument("--slide", metavar="SLIDE",
                   help="the slide file (default: the one the edit store records)")
    p.add_argument("--config", help="JSON/YAML file of fine-tuning parameters")
    add_params_arguments(p, FinetuneParams, skip=("pseudo_elsewhere",))
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .. import WsssError
    from ..corrections.store import EditStore
    from ..io.slide import Slide
    from ..models.checkpoint import load_model
    from ..progress import run_to_end
    from ..slide_job import check_out_dir
    from ..train.versioned import edit_samples, finetune_version

    params = params_from_args(args, FinetuneParams)
    if str(args.out).endswith(".safetensors"):
        raise WsssError("--out is the folder of model versions; the file name "
                        "<name>-v<N>-<hash8>.safetensors is chosen for you")
    out = check_out_dir(args.out, create=False)
    store = EditStore.open(args.edits, read_only=True)
    slide_path = args.slide or store.slide_id.get("path")
    if not slide_path:
        raise WsssError(f"the edit store '{args.edits}' does not record its slide's file: "
                        "pass --slide")
    model = load_model(args.model)
    with Slide.open(slide_path) as slide:
        samples, regions = edit_samples(store, slide)
    n = sum(int((lab != 255).sum()) for _, lab in samples)
    print(f"{n} corrected px in {len(samples)} tiles of {Path(slide_path).name}")  # noqa: T201
    _, path = run_to_end(finetune_version(model, samples, params, out,
                                          slides=[str(slide_path)], regions=regions),
                         show=True, desc="fine-tune")
    print(f"saved {path}")  # noqa: T201
    return 0
