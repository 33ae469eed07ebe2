"""TIFF-family slides (SVS, OME-TIFF, BigTIFF, NDPI ...) through tifffile: the slide series,
its zarr levels, the scan resolution, and the refusal of damaged or truncated files."""

from __future__ import annotations

import logging
import struct
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np

from .. import WsssError
from .levels import (
    ConvertedLevel,
    SlideError,
    check_layout,
    value_range,
)

#: Series that are not the slide itself (SVS and friends).
ASSOCIATED_NAMES = ("label", "macro", "thumbnail", "overview")
#: Plausible microns per pixel (a 72-dpi tag written by default is not a scan resolution).
MPP_RANGE = (0.01, 50.0)

_UNIT_TO_UM = {"nm": 1e-3, "um": 1.0, "µm": 1.0, "\u03bcm": 1.0, "micron": 1.0, "mm": 1e3,
               "cm": 1e4, "m": 1e6}


def _mpp_from_tiff(tf: Any, page: Any) -> tuple[float | None, str]:
    """MPP and where it came from: Aperio description, OME XML, then resolution tags."""
    if tf.is_svs:
        from tifffile.tifffile import svs_description_metadata

        try:
            mpp = float(svs_description_metadata(page.description).get("MPP", 0)) or None
        except (ValueError, TypeError):
            mpp = None
        if mpp and MPP_RANGE[0] <= mpp <= MPP_RANGE[1]:
            return mpp, "aperio"
    if tf.is_ome:
        mpp = _mpp_from_ome(tf.ome_metadata or "")
        if mpp is not None:
            return mpp, "ome"
    tags = page.tags
    xres, unit = tags.get("XResolution"), tags.get("ResolutionUnit")
    if xres is not None and unit is not None:
        num, den = xres.value if isinstance(xres.value, tuple) else (xres.value, 1)
        per_unit = num / den if den else 0.0
        um_per_unit = {2: 25400.0, 3: 10000.0}.get(int(unit.value))
        if per_unit > 0 and um_per_unit:
            mpp = um_per_unit / per_unit
            if MPP_RANGE[0] <= mpp <= MPP_RANGE[1]:
                return mpp, "tiff-resolution"
    return None, "unknown"


def _mpp_from_ome(xml: str) -> float | None:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    for el in root.iter():
        if el.tag.endswith("Pixels") and "PhysicalSizeX" in el.attrib:
            try:
                size = float(el.attrib["PhysicalSizeX"])
            except ValueError:
                return None
            unit = el.attrib.get("PhysicalSizeXUnit", "µm")
            factor = _UNIT_TO_UM.get(unit)
            if factor is None or size <= 0:
                return None
            mpp = size * factor
            return mpp if MPP_RANGE[0] <= mpp <= MPP_RANGE[1] else None
    return None


def decode_error(path: Any, err: BaseException) -> SlideError:
    msg = str(err)
    low = msg.lower()
    codec_words = ("imagecodecs", "codec", "compression", "decompress")
    if isinstance(err, (ImportError, NotImplementedError)) or any(w in low for w in codec_words):
        return SlideError(
            f"cannot decode the image data of '{path}' ({msg or type(err).__name__}). "
            "The codec is missing: install or upgrade imagecodecs (pip install -U imagecodecs)"
        )
    return SlideError(f"cannot read the image data of '{path}': {msg or type(err).__name__}. "
                      "The file may be damaged or truncated")


def _pick_series(tf: Any) -> tuple[Any, dict[str, Any]]:
    """The slide series (largest non-associated image) and the associated ones by name."""
    main, assoc = None, {}
    for s in tf.series:
        name = (s.name or "").strip().lower()
        if any(name.startswith(a) for a in ASSOCIATED_NAMES):
            assoc[name] = s
            continue
        if "Y" not in s.axes or "X" not in s.axes:
            continue
        area = s.shape[s.axes.index("Y")] * s.shape[s.axes.index("X")]
        if main is None or area > main[0]:
            main = (area, s)
    if main is None:
        raise SlideError(f"'{tf.filename}' holds no 2D image series")
    return main[1], assoc


#: Words of tifffile log messages that mean the file lost data (truncated, overwritten).
_DAMAGE_WORDS = ("offset", "corrupt", "truncat", "invalid", "unexpected end", "out of range")


class _TiffComplaints(logging.Handler):
    """Collects what tifffile logs while a file is parsed (instead of printing it)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if any(w in msg.lower() for w in _DAMAGE_WORDS):
            self.messages.append(msg)
        else:  # a harmless remark about a readable file: keep it out of the user's way
            logging.getLogger(__name__).debug("tifffile: %s", msg)

    def __enter__(self) -> _TiffComplaints:
        self._logger = logging.getLogger("tifffile")
        self._propagate = self._logger.propagate
        self._logger.addHandler(self)
        self._logger.propagate = False
        return self

    def __exit__(self, *exc: object) -> None:
        self._logger.removeHandler(self)
        self._logger.propagate = self._propagate


def _damaged(p: Path, complaints: list[str]) -> SlideError:
    """The one-line error of a file tifffile could only partly parse."""
    first = complaints[0].split("> ", 1)[-1].strip()  # drop tifffile's "<TiffPages @n>" prefix
    return SlideError(f"'{p}' is truncated or damaged ({p.stat().st_size:,} bytes; {first}). "
                      "Copy or download the file again")


def open_tiff(p: Path) -> dict[str, Any]:
    import tifffile

    with _TiffComplaints() as complaints:
        try:
            tf = tifffile.TiffFile(p)
        except tifffile.TiffFileError as err:
            raise SlideError(f"'{p}' is not a TIFF/SVS file or its header is damaged ({err})") \
                from err
        except (OSError, ValueError, KeyError, IndexError, struct.error) as err:
            raise SlideError(f"'{p}' cannot be opened: {err}. The file may be damaged") from err
        closers: list[Any] = [tf]
        try:
            slide = _slide_from_tiff(p, tf, closers)
            if complaints.messages:  # pages or tags tifffile had to skip: refuse, don't guess
                raise _damaged(p, complaints.messages)
            return slide
        except SlideError as err:
            for c in reversed(closers):
                c.close()
            if complaints.messages and "truncated" not in str(err):
                raise _damaged(p, complaints.messages) from err
            raise
        except BaseException:
            for c in reversed(closers):
                c.close()
            raise


def _slide_from_tiff(p: Path, tf: Any, closers: list[Any]) -> dict[str, Any]:
    series, assoc, page = _slide_series(p, tf)
    channels = _check_axes(p, series)
    _check_complete(p, series)
    levels = _open_levels(p, series, channels, closers)
    mpp, source = _mpp_from_tiff(tf, page)
    fmt = ("svs" if tf.is_svs else "ome-tiff" if tf.is_ome
           else "bigtiff" if tf.is_bigtiff else "tiff")
    thumb = assoc.get("thumbnail")
    info = {
        "compression": getattr(page.compression, "name", str(page.compression)).lower(),
        "tile_size": [int(page.tilelength), int(page.tilewidth)] if page.is_tiled else None,
        "stripped": not page.is_tiled,
        "dtype": str(series.dtype),
        "axes": series.axes,
        "associated": sorted(assoc),
    }
    return {"levels": levels, "mpp": mpp, "mpp_source": source, "path": p, "name": p.name,
            "fmt": fmt, "info": info, "closers": closers, "thumbnail_source": thumb}


def _slide_series(p: Path, tf: Any) -> tuple[Any, dict[str, Any], Any]:
    """``(series, associated images, first page)`` of the slide; a damaged file in one line."""
    try:
        series, assoc = _pick_series(tf)
        page = series.pages[0] if series.pages else tf.pages[0]
        if page is None:
            raise SlideError(f"'{p}' has no readable first page")
    except SlideError:
        raise
    except Exception as err:  # noqa: BLE001 - tifffile raises many kinds on damaged files
        raise SlideError(
            f"'{p}' cannot be parsed as a slide: {err}. The file may be damaged"
        ) from err
    return series, assoc, page


def _check_axes(p: Path, series: Any) -> int:
    """The number of channels of a single 2D image; stacks and several channel axes are
    refused (as is a dtype / channel layout that is not an image)."""
    axes = series.axes
    extra = [(a, n) for a, n in zip(axes, series.shape, strict=True) if a not in "YXSC" and n > 1]
    if extra:
        desc = ", ".join(f"{a}={n}" for a, n in extra)
        raise SlideError(f"'{p}' is a stack ({desc}); only single 2D slides are supported")
    ch_axes = [i for i, a in enumerate(axes) if a in "SC"]
    if len(ch_axes) > 1:
        raise SlideError(f"'{p}' has several channel axes ({axes}); not supported")
    channels = series.shape[ch_axes[0]] if ch_axes else 1
    check_layout(p.name, series.dtype, channels)
    return channels


def _open_levels(p: Path, series: Any, channels: int, closers: list[Any]) -> list[Any]:
    """The pyramid's levels as zarr arrays (converted views unless 8-bit RGB), with one tile
    decoded now so that a missing codec is reported at open, not on first paint."""
    import zarr

    try:
        store = series.aszarr()
        closers.append(store)
        root = zarr.open(store, mode="r")
    except Exception as err:  # noqa: BLE001
        raise decode_error(p, err) from err
    if isinstance(root, zarr.Group):
        arrays = [root[str(i)] for i in range(len(series.levels))]
    else:
        arrays = [root]

    axes = series.axes
    native = series.dtype == np.uint8 and axes.endswith("YXS") and channels == 3 and all(
        a.ndim == 3 for a in arrays
    )
    if native:
        levels: list[Any] = list(arrays)
    else:
        scale = value_range(p.name, arrays[-1], series.dtype)
        levels = [ConvertedLevel(a, axes, scale) for a in arrays]

    smallest = levels[-1]
    try:
        np.asarray(smallest[: min(16, smallest.shape[0]), : min(16, smallest.shape[1])])
    except WsssError:
        raise
    except Exception as err:  # noqa: BLE001
        raise decode_error(p, err) from err
    return levels


def _check_complete(p: Path, series: Any) -> None:
    """Refuse files whose image data reach past the end (a truncated download/copy)."""
    size = p.stat().st_size
    for lv in series.levels:
        for pg in lv.pages:
            if pg is None:
                continue
            offs, counts = pg.dataoffsets, pg.databytecounts
            ends = np.asarray(offs, np.int64) + np.asarray(counts, np.int64)
            if len(ends) and int(ends.max()) > size:
                raise SlideError(
                    f"'{p}' is truncated: its image data need more than its {size:,} bytes. "
                    "Copy or download the file again"
                )

