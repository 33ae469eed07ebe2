"""npe2 reader: a slide or patch file -> one napari image layer (multiscale when pyramidal).

napari calls :func:`napari_get_reader` with a path; the returned function opens the file with
:class:`~wsss_napari.io.slide.Slide` and hands napari the lazy levels (zarr arrays, never a
decoded level 0). The layer's ``scale`` is in micrometres when the file states its
resolution, otherwise 1 (pixels), and ``metadata`` carries the open ``Slide`` so the widgets
can read regions and close it when the layer is removed
(:func:`wsss_napari.io.slide.close_layer_slide`).

Errors are :class:`~wsss_napari.io.slide.SlideError` with one clear message; napari shows it
as a notification and keeps running. No napari import here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .slide import IMAGE_SUFFIXES, Slide

#: Suffixes this reader claims (matches the manifest's filename_patterns).
SUFFIXES = (".svs", ".tif", ".tiff", ".btf") + IMAGE_SUFFIXES

LayerData = tuple[Any, dict[str, Any], str]


def napari_get_reader(path: str | list[str]) -> Callable[[Any], list[LayerData]] | None:
    """Return :func:`read_slides` when every path looks like a slide/patch file, else None."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    if not paths or not all(str(p).lower().endswith(SUFFIXES) for p in paths):
        return None
    return read_slides


def read_slides(path: str | list[str]) -> list[LayerData]:
    """Open each path and return its layer-data tuples (raises SlideError on bad input)."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    out: list[LayerData] = []
    opened: list[Slide] = []
    try:
        for p in paths:
            slide = Slide.open(p)
            opened.append(slide)
            out.append(slide_layer_data(slide))
    except BaseException:
        for s in opened:
            s.close()
        raise
    return out


def slide_layer_data(slide: Slide, name: str | None = None) -> LayerData:
    """The napari image layer-data tuple of an open slide (levels stay lazy)."""
    multiscale = len(slide.levels) > 1
    data = slide.levels if multiscale else slide.levels[0]
    meta: dict[str, Any] = {
        "slide": slide,
        "mpp": slide.mpp,
        "mpp_source": slide.mpp_source,
        "path": str(slide.path) if slide.path else None,
        "downsamples": slide.downsamples,
    }
    kwargs: dict[str, Any] = {
        "name": name or (slide.path.name if slide.path else slide.name),
        "rgb": True,
        "multiscale": multiscale,
        "contrast_limits": [0, 255],
        "metadata": meta,
    }
    if slide.mpp:
        kwargs["scale"] = (slide.mpp, slide.mpp)
        kwargs["units"] = ("um", "um")
    else:
        kwargs["scale"] = (1.0, 1.0)
    return (data, kwargs, "image")
