"""Patch datasets with image-level labels, and an up-front report of bad input.

Training data is a folder of patches whose multi-label is in the file name, in the
WSSS4LUAD training layout ``<anything>-[tumor, stroma, normal].png`` (e.g.
``436219-9328-56427-[1, 1, 0].png``), or a CSV file of ``file,labels``. Every file is checked
*before* training starts (a cheap header read plus the label syntax), so a broken file shows up
in a report naming the file and the reason instead of crashing epoch 7; the user chooses to skip
such files or to stop (:func:`resolve_bad`). Loading inside the dataset is guarded too, because
files can change between the scan and the read.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import WsssError
from ..classes import CLASS_NAMES
from .labels import (
    IMAGE_SUFFIXES,
    Problem,
    labels_from_filename,
    list_images,
    parse_labels,
    read_csv_labels,
)

__all__ = [  # the label parsing of .labels stays importable from here
    "IMAGE_SUFFIXES", "PatchDataset", "PatchItem", "Problem", "ScanReport", "items_from_arrays",
    "labels_from_filename", "list_images", "load_mask", "load_rgb", "parse_labels",
    "read_csv_labels", "resolve_bad", "scan_patches", "split_items",
]

log = logging.getLogger(__name__)

#: Image modes that convert to RGB without losing meaning (noted in the report, not dropped).
_CONVERTIBLE = {"RGBA": "RGBA (alpha composited onto white)", "L": "grey", "P": "palette",
                "CMYK": "CMYK", "RGBX": "RGBX", "YCbCr": "YCbCr"}


@dataclass(frozen=True)
class PatchItem:
    """One training patch: its image file, its labels (``(3,)`` 0/1) and an optional mask."""

    path: Path
    labels: tuple[int, ...]
    mask_path: Path | None = None

    @property
    def label_array(self) -> np.ndarray:
        return np.asarray(self.labels, dtype=np.float32)


@dataclass
class ScanReport:
    """Result of :func:`scan_patches`: usable items, per-file problems and notes."""

    items: list[PatchItem] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def class_counts(self) -> np.ndarray:
        """Positive patches per class."""
        if not self.items:
            return np.zeros(len(CLASS_NAMES), dtype=np.int64)
        return np.sum([it.labels for it in self.items], axis=0).astype(np.int64)

    def summary(self, max_lines: int = 20) -> str:
        """Human-readable report (what the CLI prints)."""
        counts = self.class_counts()
        lines = [
            f"{len(self.items)} usable patches; positives per class: "
            + ", ".join(f"{n}={int(c)}" for n, c in zip(CLASS_NAMES, counts, strict=True))
        ]
        if self.problems:
            lines.append(f"{len(self.problems)} problem(s):")
            lines += [f"  {p}" for p in self.problems[:max_lines]]
            if len(self.problems) > max_lines:
                lines.append(f"  ... and {len(self.problems) - max_lines} more")
        if self.notes:
            lines.append(f"{len(self.notes)} note(s):")
            lines += [f"  {n}" for n in self.notes[:max_lines]]
            if len(self.notes) > max_lines:
                lines.append(f"  ... and {len(self.notes) - max_lines} more")
        return "\n".join(lines)


def _check_image(path: Path, notes: list[str]) -> tuple[int, int]:
    """Cheap validity check of an image file; returns (height, width) or raises WsssError."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            mode, size = im.mode, im.size
            im.verify()  # chunk CRCs / structure, without decoding pixels
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise WsssError(f"unreadable or corrupt image ({type(err).__name__}: {err})") from err
    if mode != "RGB":
        if mode in _CONVERTIBLE:
            notes.append(f"{path.name}: {_CONVERTIBLE[mode]} image, converted to RGB")
        else:
            raise WsssError(f"unsupported image mode '{mode}' (need RGB; 8-bit per channel)")
    w, h = size
    if h < 8 or w < 8:
        raise WsssError(f"image is too small ({w}x{h} px)")
    return h, w


def _check_mask(path: Path, shape: tuple[int, int]) -> None:
    from ..io.masks import check_mask_file

    h, w = check_mask_file(path)
    if (h, w) != shape:
        raise WsssError(
            f"mask size {w}x{h} does not match the image size {shape[1]}x{shape[0]}"
        )


def scan_patches(
    source: str | Path | Sequence[PatchItem],
    csv_path: str | Path | None = None,
    mask_dir: str | Path | None = None,
    require_masks: bool = False,
) -> ScanReport:
    """Validate a patch data set up front and report every problem per file.

    Args:
        source: a folder in the challenge layout, or items already built (re-checked).
        csv_path: a CSV of ``file,labels`` instead of labels in the names (paths relative to
            ``source`` when it is a folder, else to the CSV).
        mask_dir: a folder of masks with the same file names (segmentation data).
        require_masks: a missing mask is a problem (segmentation training).

    Returns:
        The report; nothing is raised for bad files (see :func:`resolve_bad`).
    """
    report = ScanReport()
    entries, masks_given = _scan_entries(source, csv_path, report)
    mdir = Path(mask_dir) if mask_dir is not None else None
    if mdir is not None and not mdir.is_dir():
        raise WsssError(f"mask folder '{mdir}' does not exist or is not a folder")
    for path, lab in entries:
        try:
            report.items.append(_check_entry(path, lab, masks_given.get(path), mdir,
                                             require_masks, report.notes))
        except WsssError as err:
            report.problems.append(Problem(path, str(err)))
    counts = report.class_counts()
    for name, c in zip(CLASS_NAMES, counts, strict=True):
        if report.items and c == 0:
            report.problems.append(
                Problem(None, f"no patch is labelled '{name}': the model cannot learn that class")
            )
    return report


_Entry = tuple[Path, str | tuple[int, ...] | None]


def _scan_entries(source: str | Path | Sequence[PatchItem], csv_path: str | Path | None,
                  report: ScanReport) -> tuple[list[_Entry], dict[Path, Path | None]]:
    """What to check: (file, raw label) pairs and the masks items already name (CSV rows are
    parsed here, so their syntax problems land in ``report``)."""
    if not isinstance(source, (str, Path)):
        return ([(Path(it.path), tuple(it.labels)) for it in source],
                {Path(it.path): it.mask_path for it in source})
    if csv_path is not None:
        rows, problems = read_csv_labels(csv_path, root=source)
        report.problems += problems
        return [(f, lab) for f, lab in rows], {}
    entries: list[_Entry] = [(f, None) for f in list_images(source)]
    if not entries:
        raise WsssError(
            f"no images ({', '.join(IMAGE_SUFFIXES)}) found in '{source}'"
        )
    return entries, {}


def _check_entry(path: Path, lab: str | tuple[int, ...] | None, mask_path: Path | None,
                 mdir: Path | None, require_masks: bool, notes: list[str]) -> PatchItem:
    """One file's labels, image and mask checked into an item (``WsssError`` says why not)."""
    if lab is None:
        labels = labels_from_filename(path)
    elif isinstance(lab, str):
        labels = parse_labels(lab)
    else:
        labels = tuple(int(v) for v in lab)
    if not path.is_file():
        raise WsssError("file not found")
    shape = _check_image(path, notes)
    if mdir is not None:
        cand = mdir / path.name
        mask_path = cand if cand.is_file() else mdir / (path.stem + ".png")
    if mask_path is not None and not Path(mask_path).is_file():
        if require_masks:
            mp = Path(mask_path)
            raise WsssError(f"no mask '{mp.name}' in '{mp.parent}'")
        mask_path = None
    if mask_path is None and require_masks:
        raise WsssError("no mask given")
    if mask_path is not None:
        _check_mask(Path(mask_path), shape)
    return PatchItem(Path(path), labels, Path(mask_path) if mask_path else None)


def resolve_bad(report: ScanReport, on_bad: str = "skip") -> list[PatchItem]:
    """Apply the user's choice for bad input: ``'skip'`` the bad files or ``'stop'``.

    Raises:
        WsssError: with ``'stop'`` and any problem (the message lists them), or when nothing
            usable is left.
    """
    if on_bad not in ("skip", "stop"):
        raise WsssError(f"on_bad must be 'skip' or 'stop', not {on_bad!r}")
    if report.problems and on_bad == "stop":
        raise WsssError(f"{_problem_names(report)}: use --on-bad skip to train without them "
                        "(each file's reason is in the report)")
    if not report.items:
        raise WsssError("no usable training patches"
                        + (f" ({_problem_names(report)})" if report.problems else ""))
    return list(report.items)


def _problem_names(report: ScanReport, most: int = 5) -> str:
    """One line naming the bad files of a report (its summary gives each reason)."""
    names = [p.path.name if p.path is not None else "the data set as a whole"
             for p in report.problems]
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return f"{len(names)} bad input(s): {', '.join(names[:most])}{more}"


def load_rgb(path: str | Path) -> np.ndarray:
    """Read an image as ``uint8 (H, W, 3)`` RGB (:func:`wsss_napari.io.images.read_rgb`)."""
    from ..io.images import read_rgb

    return read_rgb(path)


def load_mask(path: str | Path) -> np.ndarray:
    """Read a label mask as ``uint8 (H, W)`` (:func:`wsss_napari.io.masks.read_mask`)."""
    from ..io.masks import read_mask

    return read_mask(path)


def split_items(items: Sequence[PatchItem], val_fraction: float, seed: int
                ) -> tuple[list[PatchItem], list[PatchItem]]:
    """Deterministic train/validation split (every class keeps a training positive)."""
    n = len(items)
    n_val = int(round(n * val_fraction))
    if n_val == 0 or n - n_val < 1:
        return list(items), []
    order = np.random.default_rng(seed).permutation(n)
    val_idx = set(order[:n_val].tolist())
    train = [items[i] for i in range(n) if i not in val_idx]
    val = [items[i] for i in range(n) if i in val_idx]
    return train, val


class PatchDataset:
    """Map-style dataset of (image, labels[, mask]) with guarded loading.

    ``transform(rgb, mask, labels, rng_seed_index) -> sample`` turns the loaded arrays into
    tensors; it is given the item index so augmentations can be seeded per item and epoch.
    A file that fails to load (changed after the scan) is logged once and replaced by the next
    readable item, so an epoch never dies halfway.
    """

    def __init__(self, items: Sequence[PatchItem], transform=None, with_masks: bool = False):
        self.items = list(items)
        self.transform = transform
        self.with_masks = with_masks
        self.failed: set[Path] = set()

    def __len__(self) -> int:
        return len(self.items)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """Raw arrays of item ``index`` (falls back to the next readable item)."""
        n = len(self.items)
        for k in range(n):
            it = self.items[(index + k) % n]
            if it.path in self.failed:
                continue
            try:
                rgb = load_rgb(it.path)
                mask = load_mask(it.mask_path) if (self.with_masks and it.mask_path) else None
                if mask is not None and mask.shape != rgb.shape[:2]:
                    raise WsssError(f"mask size {mask.shape} != image size {rgb.shape[:2]}")
                return rgb, mask, it.label_array
            except WsssError as err:
                log.warning("skipping %s: %s", it.path, err)
                self.failed.add(it.path)
        raise WsssError("no training patch could be read (all files failed to load)")

    def __getitem__(self, index: int):
        rgb, mask, labels = self.load(index)
        if self.transform is None:
            return rgb, mask, labels
        return self.transform(rgb, mask, labels, index)


def items_from_arrays(samples: Iterable[tuple[np.ndarray, np.ndarray | None, np.ndarray]],
                      out_dir: str | Path) -> list[PatchItem]:
    """Write in-memory (rgb, mask, labels) samples in the challenge layout; return the items."""
    from PIL import Image

    from ..io.atomic import atomic_path, check_writable_dir
    from ..io.masks import write_label_png
    from ..region import MaskGeometry

    out = check_writable_dir(out_dir)
    items = []
    for i, (rgb, mask, labels) in enumerate(samples):
        flags = ", ".join(str(int(v)) for v in labels)
        name = f"{i:06d}-[{flags}].png"
        with atomic_path(out / name) as tmp:
            Image.fromarray(rgb).save(tmp)
        mpath = None
        if mask is not None:
            mdir = check_writable_dir(out / "masks")
            mpath = mdir / name
            write_label_png(mask.astype(np.uint8), mpath, MaskGeometry(slide=name))
        items.append(PatchItem(out / name, tuple(int(v) for v in labels), mpath))
    return items
