"""A tiny live loss plot: a polyline painted with QPainter (no plotting library needed)."""

from __future__ import annotations

import math
from typing import Any

from qtpy.QtCore import QPointF, Qt
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QSizePolicy, QWidget


class LossPlot(QWidget):
    """Plots the losses appended to it; the y axis spans the values seen so far."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.values: list[float] = []
        self.setMinimumHeight(80)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setToolTip("Training loss per step (lower is better)")

    def append(self, value: float) -> None:
        if math.isfinite(value):
            self.values.append(float(value))
            self.update()

    def clear(self) -> None:
        self.values = []
        self.update()

    def paintEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        w, h, m = self.width(), self.height(), 4
        p.setPen(QPen(QColor(110, 110, 110), 1))
        p.drawRect(0, 0, w - 1, h - 1)
        if len(self.values) >= 2:
            lo, hi = min(self.values), max(self.values)
            span = (hi - lo) or 1.0
            n = len(self.values) - 1
            pts = QPolygonF([
                QPointF(m + i * (w - 2 * m) / n, h - m - (v - lo) / span * (h - 2 * m))
                for i, v in enumerate(self.values)
            ])
            p.setPen(QPen(QColor(80, 170, 255), 1.5))
            p.drawPolyline(pts)
        if self.values:
            p.setPen(QPen(QColor(200, 200, 200)))
            p.drawText(self.rect().adjusted(m, m, -m, -m),
                       Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignTop,
                       f"loss {self.values[-1]:.4f}")
        p.end()
