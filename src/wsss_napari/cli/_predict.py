"""``wsss-napari predict``: one palette PNG mask per image (the WSSS4LUAD submission format)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from .. import WsssError
from ..params import CamParams, PostprocParams
from ..region import MaskGeometry
from ._params import add_params_arguments, params_from_args, postproc_from_args

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "predict",
        help="label masks of a folder of images -> palette PNGs",
        description="Predict a tissue mask for every image of IMAGES_DIR and write it to "
        "OUT_DIR as a palette PNG of the same name (values 0 tumor, 1 stroma, 2 normal, "
        "3 background, WSSS4LUAD colours). CAM models go through multi-scale CAMs and the "
        "post-processing; segmentation models through a sliding window. 'default' uses the "
        "shipped segmentation model when it is installed (--mask-from).",
    )
    p.add_argument("model", metavar="MODEL", help="checkpoint (.safetensors) or 'default'")
    p.add_argument("images", metavar="IMAGES_DIR", help="folder of RGB images")
    p.add_argument("--out", required=True, metavar="OUT_DIR", help="output folder")
    p.add_argument("--background-masks", metavar="DIR",
                   help="folder of 0/1 masks of the same names; 1 forces background (class 3)")
    p.add_argument("--params", metavar="FILE",
                   help="post-processing parameters (JSON/YAML, e.g. from 'wsss-napari tune'); "
                   "default: the model's recommended ones ('tune --into-model'), if it has any")
    p.add_argument("--cam-params", metavar="FILE", help="CAM parameters (JSON/YAML)")
    add_mask_from_arguments(p)
    p.add_argument("--on-bad", choices=("skip", "stop"), default="skip",
                   help="unreadable images (or ones without a background mask): skip them, "
                   "each reported, or stop before writing anything (default: skip)")
    add_params_arguments(p, PostprocParams)
    add_params_arguments(p, CamParams)
    p.set_defaults(func=run)


def add_mask_from_arguments(p: argparse.ArgumentParser) -> None:
    """``--mask-from`` and ``--seg-model`` (``inference.mask_source``), shared with ``slide``
    and ``batch``."""
    from ..inference.mask_source import MASK_FROM

    p.add_argument("--mask-from", choices=MASK_FROM, default="auto",
                   help="which model makes the masks: 'seg' a segmentation model (stage 2), "
                   "'cam' the CAM model's maps + post-processing; 'auto' (default): the "
                   "segmentation model when the model is 'default' and the default "
                   "segmentation model is installed, or when one is given, else the CAMs; "
                   "with 'seg' the post-processing only lends its glass rule")
    p.add_argument("--seg-model", metavar="FILE",
                   help="segmentation checkpoint for --mask-from seg/auto (default: the shipped "
                   "one)")


def list_images(folder: str | Path) -> list[Path]:
    """Image files of ``folder``, sorted; a clear error when there are none."""
    d = Path(folder)
    if not d.is_dir():
        raise WsssError(f"image folder '{d}' does not exist")
    files = sorted(f for f in d.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
    if not files:
        raise WsssError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in '{d}'")
    return files


def read_rgb(path: Path) -> np.ndarray:
    """An image as ``uint8 (H, W, 3)`` (:func:`wsss_napari.io.images.read_rgb`)."""
    from ..io.images import read_rgb as _read_rgb

    return _read_rgb(path)


def read_labels(path: Path) -> np.ndarray:
    """A label mask (:func:`wsss_napari.io.masks.read_mask`: palette / grey values as-is, RGB
    mapped through the WSSS4LUAD palette)."""
    from ..io.masks import read_mask

    return read_mask(path)


def find_match(folder: Path, image: Path, what: str) -> Path:
    """The file of ``folder`` with ``image``'s stem (any image suffix)."""
    for suffix in (image.suffix, *IMAGE_SUFFIXES):
        cand = folder / (image.stem + suffix)
        if cand.is_file():
            return cand
    raise WsssError(f"no {what} for '{image.name}' in '{folder}'")


def write_palette_png(mask: np.ndarray, path: Path, geometry: MaskGeometry | None = None) -> None:
    """Atomic palette PNG (WSSS4LUAD colours; pixel values are the labels) that carries its
    geometry (default: the mask lies on the image of the same name, at its full size)."""
    from ..io.masks import write_label_png

    write_label_png(mask, path, geometry or MaskGeometry(slide=path.name))


def check_image(path: Path) -> str | None:
    """Why ``path`` cannot be predicted (a cheap header and checksum check), or None."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.verify()
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
        return f"not a readable image ({' '.join(str(err).split()) or type(err).__name__})"
    except Image.DecompressionBombError as err:
        return f"too large ({err})"
    return None


def load_background(folder: str | None, image: Path) -> np.ndarray | None:
    if not folder:
        return None
    return read_labels(find_match(Path(folder), image, "background mask")) != 0


def run(args: argparse.Namespace) -> int:
    from ..inference.mask_source import describe
    from ..inference.predict import predict_mask
    from ..io.atomic import atomic_write_text, check_writable_dir
    from ..params import RunRecord
    from ..progress import Progress, run_to_end
    from ..stain import image_for_model

    # everything is validated before OUT_DIR is created: a bad model, parameter file or
    # image folder leaves nothing behind
    cam = params_from_args(args, CamParams, config_attr="cam_params")
    images = list_images(args.images)
    src, model, post, post_source = _mask_model(args)
    todo, bad = _screen_images(images, args)
    out = check_writable_dir(args.out)
    print(describe(src))  # noqa: T201
    if model.config.kind == "cam":
        print(f"post-processing: {post_source}")  # noqa: T201

    def job():
        for i, f in enumerate(todo):
            try:  # damage the header check could not see shows up when decoding
                mask = predict_mask(model, image_for_model(read_rgb(f), model), cam, post,
                                    background=load_background(args.background_masks, f))
            except WsssError as err:
                if args.on_bad == "stop":
                    raise
                bad[f.name] = str(err)
                _report_bad(f.name, str(err), args.on_bad)
            else:
                write_palette_png(mask, out / (f.stem + ".png"), MaskGeometry(slide=f.name))
            yield Progress("predict", i + 1, len(todo), {"image": f.name})

    run_to_end(job(), show=True, desc="predict")
    record = RunRecord.make(post, cam, model_name=str(src.model), mask_from=src.kind,
                            model_hash=getattr(model, "file_hash", ""))
    atomic_write_text(out / "predict.run.json", record.to_json())
    if bad:
        atomic_write_text(out / "predict.skipped.tsv",
                          "".join(f"{name}\t{why}\n" for name, why in sorted(bad.items())))
    written = len(todo) - sum(f.name in bad for f in todo)
    print(f"{written} masks written to {out}"  # noqa: T201
          + (f"; {len(bad)} image(s) skipped, listed in predict.skipped.tsv" if bad else ""))
    return 0


def _screen_images(images: list[Path], args: argparse.Namespace
                   ) -> tuple[list[Path], dict[str, str]]:
    """The images to predict and ``{name: why}`` of the bad ones (each reported); an error
    when ``--on-bad stop`` finds one or when none is left."""
    bad: dict[str, str] = {}
    for f in images:
        why = check_image(f)
        if why is None and args.background_masks:
            try:
                find_match(Path(args.background_masks), f, "background mask")
            except WsssError as err:
                why = str(err)
        if why is not None:
            bad[f.name] = why
            _report_bad(f.name, why, args.on_bad)
    if bad and args.on_bad == "stop":
        raise WsssError(f"{len(bad)} bad image(s) in '{args.images}' (listed above); nothing "
                        "was written: fix or remove them, or use --on-bad skip")
    todo = [f for f in images if f.name not in bad]
    if not todo:
        raise WsssError(f"none of the {len(images)} image(s) in '{args.images}' can be read; "
                        "nothing was written")
    return todo, bad


def _mask_model(args: argparse.Namespace):
    """``(MaskSource, loaded mask model, post-processing, where it came from in words)``."""
    from ..inference.mask_source import resolve_mask_source
    from ..models.checkpoint import load_model

    src = resolve_mask_source(args.model, args.mask_from, args.seg_model)
    model = load_model(src.model)
    return (src, model, *postproc_from_args(args, model, config_attr="params"))


def _report_bad(name: str, why: str, on_bad: str) -> None:
    """One line per bad image, on stderr, as it is found."""
    import sys

    verb = "skipped" if on_bad == "skip" else "bad"
    print(f"{verb}: {name}: {why}", file=sys.stderr)  # noqa: T201
