"""A line chart on a PIL canvas, for benchmark plots without matplotlib (not a dependency).

One place for the frame, the ticks, the 0.05 mIoU grid, the labels and the legend, so the
benchmarks' plots look alike and only draw their own lines.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


class Chart:
    """A white ``width`` x ``height`` canvas whose plot area leaves ``margins`` (left, right,
    top, bottom) px; y runs over ``ys`` rounded out to 0.05, x from 0 to ``x_max``."""

    def __init__(self, width: int, height: int, margins: tuple[int, int, int, int],
                 ys: list[float], x_max: float):
        from PIL import Image, ImageDraw

        self.W, self.H = width, height
        self.L, self.R, self.T, self.B = margins
        self.img = Image.new("RGB", (width, height), "white")
        self.draw = ImageDraw.Draw(self.img)
        self.y0, self.y1 = np.floor(min(ys) * 20) / 20, np.ceil(max(ys) * 20) / 20
        self.x_max = x_max

    def px(self, x: float, y: float) -> tuple[float, float]:
        """Canvas pixel of the data point (x, y)."""
        W, H, L, R, T, B = self.W, self.H, self.L, self.R, self.T, self.B
        return (L + (W - L - R) * x / self.x_max,
                H - B - (H - T - B) * (y - self.y0) / max(self.y1 - self.y0, 1e-9))

    def axes(self, x_ticks: list[tuple[float, str]], tick_dx: int, x_label: str,
             x_label_dx: int, y_label: str, title: str) -> None:
        """Frame, x ticks (value, text; text shifted ``tick_dx`` px), y grid every 0.05,
        the axis labels (x label ``x_label_dx`` px right of the plot's left) and the title."""
        d, H, L, R, T, B = self.draw, self.H, self.L, self.R, self.T, self.B
        d.rectangle([L, T, self.W - R, H - B], outline="black")
        for x, text in x_ticks:
            X, _ = self.px(x, self.y0)
            d.line([X, H - B, X, H - B + 4], fill="black")
            d.text((X + tick_dx, H - B + 7), text, fill="black")
        for k in range(int(round((self.y1 - self.y0) / 0.05)) + 1):
            y = self.y0 + 0.05 * k
            _, Y = self.px(0, y)
            d.line([L - 4, Y, L, Y], fill="black")
            d.line([L, Y, self.W - R, Y], fill=(225, 225, 225))
            d.text((L - 40, Y - 6), f"{y:.2f}", fill="black")
        d.text((L + x_label_dx, H - 22), x_label, fill="black")
        d.text((8, T - 16), y_label, fill="black")
        d.text((8, 4), title, fill="black")

    def legend(self, i: int, colour: tuple[int, int, int], label: str) -> None:
        """The ``i``-th legend entry, right of the plot."""
        x, y = self.W - self.R, self.T + 20 * i
        self.draw.line([x + 12, y + 14, x + 34, y + 14], fill=colour, width=3)
        self.draw.text((x + 40, y + 8), label, fill="black")

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.img.save(path)
