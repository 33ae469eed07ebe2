"""A form of controls built from a parameter dataclass: one control per field.

Numbers with a documented ``range`` get a slider plus an exact spin box (a logarithmic slider
when the range spans more than three decades, e.g. region sizes of 0..1,000,000 px); booleans a
check box; ``StrEnum`` fields and strings with ``choices`` a combo box. The form turns its
controls into the dataclass through :attr:`ParamsForm.params`, so the names and defaults stay
those of ``wsss_napari.params``.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from enum import StrEnum
from typing import Any

from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QSlider,
    QSpinBox,
    QWidget,
)

from ..params import ParamsBase
from ._tooltips import params_tooltip

STEPS = 1000


class ParamSlider(QWidget):
    """Slider + spin box for one bounded number; ``valueChanged`` while moving,
    ``released`` when the user lets go (or types a value)."""

    valueChanged = Signal(float)  # noqa: N815 - Qt naming
    released = Signal()

    def __init__(self, lo: float, hi: float, integer: bool, parent=None) -> None:
        super().__init__(parent)
        self.lo, self.hi, self.integer = float(lo), float(hi), integer
        self.geometric = lo > 0 and hi / lo >= 1000  # e.g. learning rates: 1e-7 .. 1
        self.log = (hi - lo) > 1000 and not self.geometric
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0, STEPS)
        self.spin = QSpinBox() if integer else QDoubleSpinBox()
        if integer:
            self.spin.setRange(int(lo), int(min(hi, 2**31 - 1)))
        else:
            small = math.ceil(-math.log10(lo)) if lo > 0 else 0
            self.spin.setDecimals(max(small, 3 if hi - lo <= 2 else 2))
            self.spin.setRange(lo, hi)
        self.spin.setKeyboardTracking(False)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.slider, 3)
        row.addWidget(self.spin, 1)
        self.slider.valueChanged.connect(self._on_slider_moved)
        self.slider.sliderReleased.connect(self.released)
        self.spin.valueChanged.connect(self._on_spin_changed)

    def value(self) -> float:
        return self.spin.value()

    def setValue(self, v: float) -> None:  # noqa: N802 - Qt naming
        self.spin.setValue(int(round(v)) if self.integer else float(v))

    def _to_pos(self, v: float) -> int:
        span = self.hi - self.lo
        if self.geometric:
            t = math.log(max(v, self.lo) / self.lo) / math.log(self.hi / self.lo)
        else:
            t = math.log1p(v - self.lo) / math.log1p(span) if self.log else (v - self.lo) / span
        return int(round(t * STEPS))

    def _to_value(self, pos: int) -> float:
        t, span = pos / STEPS, self.hi - self.lo
        if self.geometric:
            v = self.lo * (self.hi / self.lo) ** t
        else:
            v = self.lo + (math.expm1(t * math.log1p(span)) if self.log else t * span)
        return round(v) if self.integer else v

    def _on_slider_moved(self, pos: int) -> None:
        if self._to_pos(self.spin.value()) == pos:
            return
        self.spin.blockSignals(True)
        self.spin.setValue(self._to_value(pos))
        self.spin.blockSignals(False)
        self.valueChanged.emit(float(self.spin.value()))
        if not self.slider.isSliderDown():  # keyboard / click on the groove
            self.released.emit()

    def _on_spin_changed(self, v: float) -> None:
        self.slider.blockSignals(True)
        self.slider.setValue(self._to_pos(v))
        self.slider.blockSignals(False)
        self.valueChanged.emit(float(v))
        self.released.emit()


class ParamsForm(QWidget):
    """Controls for the fields of ``cls``; ``changed`` while editing, ``committed`` on release."""

    changed = Signal()
    committed = Signal()

    def __init__(self, cls: type[ParamsBase], skip: tuple[str, ...] = (), parent=None) -> None:
        super().__init__(parent)
        self.cls = cls
        self.controls: dict[str, QWidget] = {}
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        hints = typing.get_type_hints(cls)
        default = cls()
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.name in skip:
                continue
            tp, rng = hints[f.name], f.metadata.get("range")
            if tp is bool:
                w: QWidget = QCheckBox()
                w.toggled.connect(self._on_control_committed)
            elif isinstance(tp, type) and issubclass(tp, StrEnum):
                w = QComboBox()
                w.addItems([m.value for m in tp])
                w.currentTextChanged.connect(self._on_control_committed)
            elif f.metadata.get("choices"):
                w = QComboBox()
                w.addItems(list(f.metadata["choices"]))
                w.currentTextChanged.connect(self._on_control_committed)
            elif tp in (int, float) and rng is not None:
                w = ParamSlider(rng[0], rng[1], tp is int)
                w.valueChanged.connect(self._on_control_changed)
                w.released.connect(self._on_control_committed)
            else:
                continue
            w.setToolTip(params_tooltip(cls, f.name))
            form.addRow(f.name.replace("_", " "), w)
            self.controls[f.name] = w
        self.params = default

    @property
    def params(self) -> ParamsBase:
        """The parameter object the controls describe (validated by the dataclass)."""
        values: dict[str, Any] = {}
        for name, w in self.controls.items():
            if isinstance(w, QCheckBox):
                values[name] = w.isChecked()
            elif isinstance(w, QComboBox):
                values[name] = w.currentText()
            else:
                values[name] = w.value()
        return self.cls.from_dict(values)

    @params.setter
    def params(self, p: ParamsBase) -> None:
        for name, w in self.controls.items():
            w.blockSignals(True)
            v = getattr(p, name)
            if isinstance(w, QCheckBox):
                w.setChecked(bool(v))
            elif isinstance(w, QComboBox):
                w.setCurrentText(v.value if isinstance(v, StrEnum) else str(v))
            else:
                w.spin.blockSignals(True)
                w.setValue(v)
                w.slider.setValue(w._to_pos(w.value()))
                w.spin.blockSignals(False)
            w.blockSignals(False)

    def _on_control_changed(self, *_: Any) -> None:
        self.changed.emit()

    def _on_control_committed(self, *_: Any) -> None:
        self.committed.emit()
