"""Where a map sits on its slide: one region type and one mask-geometry record.

Every place in the project that says "which part of the slide" uses :class:`Region`
(level-0 pixels, named fields, keyword-only so no caller can swap an order), and every
mask carries a :class:`MaskGeometry` (region origin, downsample, microns-per-pixel, slide)
that the next command reads back. Serialised the same way everywhere (``to_dict``):
CAM-store attributes, export metadata, the edit store and ``layer.metadata``.

Conventions (checked against known pixels in the tests):
- level-0 pixel ``(y, x)`` covers the square ``[x, x + 1) x [y, y + 1)`` of slide space;
- map pixel ``(row, col)`` of a mask with geometry ``g`` covers level-0
  ``[g.x + col * g.downsample, g.x + (col + 1) * g.downsample)`` (same for y / row).
- The CLI spells a region ``--region Y X H W`` (numpy order: rows first), everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from . import WsssError

#: The order of the four numbers of every ``--region`` CLI flag.
CLI_REGION_METAVAR = ("Y", "X", "H", "W")


@dataclass(frozen=True, kw_only=True)
class Region:
    """A rectangle of a slide in level-0 pixels: top-left ``(y, x)`` and ``height x width``."""

    y: float
    x: float
    height: float
    width: float

    def __post_init__(self) -> None:
        for name in ("y", "x", "height", "width"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                raise WsssError(f"region {name}={v!r} is not a finite number")
        if self.y < 0 or self.x < 0:
            raise WsssError(f"region origin (y={self.y:g}, x={self.x:g}) is negative")
        if self.height <= 0 or self.width <= 0:
            raise WsssError(f"region size {self.height:g} x {self.width:g} is empty")

    @classmethod
    def from_cli(cls, values: Sequence[float]) -> Region:
        """From a ``--region Y X H W`` flag."""
        if len(values) != 4:
            raise WsssError(f"--region takes 4 numbers {' '.join(CLI_REGION_METAVAR)}, "
                            f"got {len(values)}")
        y, x, h, w = values
        return cls(y=y, x=x, height=h, width=w)

    @classmethod
    def whole(cls, height: float, width: float) -> Region:
        """The whole level-0 image of a slide."""
        return cls(y=0, x=0, height=height, width=width)

    @property
    def y1(self) -> float:
        return self.y + self.height

    @property
    def x1(self) -> float:
        return self.x + self.width

    def clip(self, height: float, width: float) -> Region:
        """This region cut to a slide of ``height x width`` level-0 px (error if outside)."""
        y0, x0 = min(max(self.y, 0), height), min(max(self.x, 0), width)
        y1, x1 = min(self.y1, height), min(self.x1, width)
        if y1 <= y0 or x1 <= x0:
            raise WsssError(f"region {self.describe()} lies outside the slide "
                            f"({int(width)} x {int(height)} px)")
        return Region(y=y0, x=x0, height=y1 - y0, width=x1 - x0)

    def to_level(self, downsample: float) -> tuple[slice, slice]:
        """Row and column slices of this region in an image ``downsample`` x smaller."""
        d = float(downsample)
        y0, x0 = int(math.floor(self.y / d)), int(math.floor(self.x / d))
        y1, x1 = int(math.ceil(self.y1 / d)), int(math.ceil(self.x1 / d))
        return slice(y0, y1), slice(x0, x1)

    def describe(self) -> str:
        return (f"x {self.x:g}..{self.x1:g}, y {self.y:g}..{self.y1:g} "
                f"({self.width:g} x {self.height:g} px, level 0)")

    def to_dict(self) -> dict[str, float]:
        return {"y": _num(self.y), "x": _num(self.x),
                "height": _num(self.height), "width": _num(self.width)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Region:
        try:
            return cls(y=d["y"], x=d["x"], height=d["height"], width=d["width"])
        except (KeyError, TypeError) as err:
            raise WsssError(f"not a region record: {d!r}") from err


@dataclass(frozen=True, kw_only=True)
class MaskGeometry:
    """Where a 2-D map lies on its slide.

    Attributes:
        y, x: level-0 coordinate of the top-left corner of map pixel ``(0, 0)``.
        downsample: level-0 pixels per map pixel (``> 0``).
        mpp: level-0 microns per pixel, or ``None`` when the slide does not say.
        slide: the slide's file name (or path) the map belongs to, ``""`` if unknown.
    """

    y: float = 0.0
    x: float = 0.0
    downsample: float = 1.0
    mpp: float | None = None
    slide: str = ""

    def __post_init__(self) -> None:
        if not (isinstance(self.downsample, (int, float)) and math.isfinite(self.downsample)
                and self.downsample > 0):
            raise WsssError(f"mask downsample {self.downsample!r} must be a positive number")
        if self.mpp is not None and not (math.isfinite(self.mpp) and self.mpp > 0):
            raise WsssError(f"mask mpp {self.mpp!r} must be a positive number or unknown")
        for name in ("y", "x"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v)):
                raise WsssError(f"mask origin {name}={v!r} is not a finite number")

    def region(self, shape: Sequence[int]) -> Region:
        """The level-0 region covered by a map of ``shape`` (rows, cols)."""
        h, w = shape[-2:]
        return Region(y=self.y, x=self.x, height=h * self.downsample, width=w * self.downsample)

    def to_level0(self, row: float, col: float) -> tuple[float, float]:
        """Level-0 ``(y, x)`` of map coordinate ``(row, col)`` (pixel corners are integers)."""
        return self.y + row * self.downsample, self.x + col * self.downsample

    def from_level0(self, y: float, x: float) -> tuple[float, float]:
        """Map ``(row, col)`` of level-0 ``(y, x)``: the inverse of :meth:`to_level0`."""
        return (y - self.y) / self.downsample, (x - self.x) / self.downsample

    def slices(self, region: Region) -> tuple[slice, slice]:
        """Rows and columns of this map that cover level-0 ``region`` (not clipped to any
        shape: the caller clips)."""
        r0, c0 = self.from_level0(region.y, region.x)
        r1, c1 = self.from_level0(region.y1, region.x1)
        eps = 1e-9
        return (slice(int(math.floor(r0 + eps)), int(math.ceil(r1 - eps))),
                slice(int(math.floor(c0 + eps)), int(math.ceil(c1 - eps))))

    def area_mm2(self, n_pixels: float) -> float | None:
        """Area in mm² of ``n_pixels`` map pixels, ``None`` when the mpp is unknown."""
        if self.mpp is None:
            return None
        return float(n_pixels) * (self.downsample * self.mpp) ** 2 * 1e-6

    def crop(self, row: int, col: int) -> MaskGeometry:
        """The geometry of the sub-map starting at ``(row, col)``."""
        y, x = self.to_level0(row, col)
        return replace(self, y=y, x=x)

    def to_dict(self) -> dict[str, Any]:
        return {"y": _num(self.y), "x": _num(self.x), "downsample": _num(self.downsample),
                "mpp": self.mpp, "slide": self.slide}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MaskGeometry:
        try:
            mpp = d.get("mpp")
            return cls(y=float(d["y"]), x=float(d["x"]), downsample=float(d["downsample"]),
                       mpp=None if mpp is None else float(mpp), slide=str(d.get("slide", "")))
        except (KeyError, TypeError, ValueError) as err:
            raise WsssError(f"not a mask geometry record: {d!r}") from err


def _num(v: float) -> float | int:
    return int(v) if float(v).is_integer() else float(v)
