"""Weak labels from masks: patches labelled ONLY with the set of classes they contain.

Used to train (and benchmark) from images with pixel masks without ever letting the masks
become pixel labels: a patch's label is the set of classes covering at least
``min_fraction`` of it, exactly the image-level labels of the WSSS4LUAD training set. The
default model is trained this way on the WSSS4LUAD validation images
(``wsss-napari train-cls --from-masks DIR``).
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path

import numpy as np

from .. import WsssError
from ..progress import Progress

#: Defaults of the benchmark and of the default model.
PATCH_SIZE = 128
PATCH_STRIDE = 64
MIN_FRACTION = 0.02
MAX_BACKGROUND = 0.8


def cut_weak_patches(rgb: np.ndarray, gt: np.ndarray, size: int = PATCH_SIZE,
                     stride: int = PATCH_STRIDE, min_fraction: float = MIN_FRACTION,
                     max_background: float = MAX_BACKGROUND, n_classes: int = 3
                     ) -> list[tuple[int, int, np.ndarray, np.ndarray]]:
    """``(y, x, rgb patch, labels)`` of every full ``size`` patch on a ``stride`` grid.

    A patch is skipped when background (label ``n_classes``) covers more than
    ``max_background`` of it or when no class reaches ``min_fraction``.
    """
    h, w = gt.shape
    ys = list(range(0, max(h - size, 0) + 1, stride)) or [0]
    xs = list(range(0, max(w - size, 0) + 1, stride)) or [0]
    out = []
    for y in ys:
        for x in xs:
            m = gt[y:y + size, x:x + size]
            if m.shape != (size, size):
                continue
            counts = np.bincount(m.ravel(), minlength=n_classes + 1)
            if counts[n_classes] > max_background * m.size:
                continue
            labels = (counts[:n_classes] >= min_fraction * m.size).astype(np.uint8)
            if labels.any():
                out.append((y, x, rgb[y:y + size, x:x + size].copy(), labels))
    return out


def weak_patch_dir_name(root: str | Path, size: int, stride: int) -> str:
    return f"weak-{Path(root).resolve().name}-{size}px-s{stride}"


def write_weak_patches(root: str | Path, out_dir: str | Path, size: int = PATCH_SIZE,
                       stride: int = PATCH_STRIDE, min_fraction: float = MIN_FRACTION,
                       max_background: float = MAX_BACKGROUND
                       ) -> Generator[Progress, None, Path]:
    """Cut weakly labelled patches of every ``root/img/*.png`` (masks in ``root/mask/``).

    Files are named ``<image>-<y>-<x>-[t, s, n].png`` (the challenge layout, so
    ``train-cls`` reads the labels from the names). Existing files are rewritten with the
    same bytes, so a rerun gives the same folder.

    Yields:
        ``Progress('weak-patches', i, n_images)``. Returns ``out_dir``.
    """
    from PIL import Image

    from ..io.atomic import atomic_path, check_writable_dir
    from .data import list_images, load_mask, load_rgb

    root = Path(root)
    if not (root / "img").is_dir() or not (root / "mask").is_dir():
        raise WsssError(f"'{root}' needs img/ and mask/ folders (images and their masks of "
                        "the same names, mask values 0-2 = classes, 3 = background)")
    images = list_images(root / "img")
    if not images:
        raise WsssError(f"no images in '{root / 'img'}'")
    out = check_writable_dir(out_dir)
    n = 0
    for i, p in enumerate(images):
        mpath = root / "mask" / p.name
        if not mpath.is_file():
            raise WsssError(f"'{p.name}' has no mask '{mpath}'")
        rgb, gt = load_rgb(p), load_mask(mpath)
        if gt.shape != rgb.shape[:2]:
            raise WsssError(f"'{p.name}': mask {gt.shape} and image {rgb.shape[:2]} differ")
        for y, x, patch, labels in cut_weak_patches(rgb, gt, size, stride, min_fraction,
                                                    max_background):
            flags = ", ".join(str(int(v)) for v in labels)
            with atomic_path(out / f"{p.stem}-{y}-{x}-[{flags}].png") as tmp:
                Image.fromarray(patch).save(tmp, format="PNG")
            n += 1
        yield Progress("weak-patches", i + 1, len(images), {"patches": n})
    return out
