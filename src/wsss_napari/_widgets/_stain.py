"""Stain widget: the slide normalised to a target stain, as a layer above the original.

Wiring only: :mod:`wsss_napari.stain` estimates the target (a Shapes ROI on the slide or a
reference file) and the slide's own stain once, in a worker; the new layer maps every level
of the slide lazily (dask) through that one normaliser, so it does not seam between chunks.
"""

from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import QComboBox, QLineEdit

from .. import WsssError
from ..layer_record import LayerRecord
from . import _tooltips as tips
from ._base import JobWidget, refusable, require_layer
from ._layers import (
    LayerCombo,
    is_shapes_layer,
    is_slide_layer,
    shapes_bbox,
    slide_of,
)


def normalized_levels(data: Any, normalizer: Any, multiscale: bool, chunk: int = 1024) -> list:
    """Lazy (dask) normalised copies of an image layer's levels (one normaliser for all)."""
    import dask.array as da
    import numpy as np

    levels = list(data) if multiscale else [data]
    out = []
    for lvl in levels:
        arr = lvl if isinstance(lvl, da.Array) else da.from_array(lvl, chunks=(chunk, chunk,
                                                                                lvl.shape[-1]))
        out.append(arr.map_blocks(lambda b: normalizer(np.asarray(b)), dtype=np.uint8,
                                  chunks=(*arr.chunks[:2], (3,))))
    return out


class StainWidget(JobWidget):
    """Dock widget "Stain normalisation": slide + target -> normalised layer beside it."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__(napari_viewer, "Show normalised slide", tips.STAIN["run"])
        viewer = napari_viewer
        self.normalizer: Any = None
        self.image_combo = LayerCombo(viewer, is_slide_layer)
        self.image_combo.setToolTip(tips.STAIN["image"])
        self.method_combo = QComboBox()
        self.method_combo.addItems(["macenko", "reinhard"])
        self.method_combo.setToolTip(tips.STAIN["method"])
        self.shapes_combo = LayerCombo(viewer, is_shapes_layer)
        self.shapes_combo.setToolTip(tips.STAIN["shapes"])
        self.reference_edit = QLineEdit("")
        self.reference_edit.setToolTip(tips.STAIN["reference"])
        form = self.fields
        form.addRow("Slide", self.image_combo)
        form.addRow("Method", self.method_combo)
        form.addRow("Target region", self.shapes_combo)
        form.addRow("or reference file", self.reference_edit)
        self.finish_layout()

    @property
    def method(self) -> str:
        return self.method_combo.currentText()

    @method.setter
    def method(self, value: str) -> None:
        if value not in ("macenko", "reinhard"):
            raise WsssError("method must be macenko or reinhard")
        self.method_combo.setCurrentText(value)

    @refusable
    def run(self):
        """Estimate and add the normalised layer; returns the worker (None if refused)."""
        layer = require_layer(self.image_combo, "no slide: open one (File > Open)")
        slide = slide_of(layer)
        reference = self.reference_edit.text().strip()
        region = None
        if not reference:
            shapes = require_layer(self.shapes_combo, "draw the target region on a Shapes "
                                   "layer, or give a reference file")
            region = shapes_bbox(shapes, layer)
        method = self.method
        return self.runner.start(lambda: self._job(slide, method, region, reference),
                                 lambda res: self._on_job_returned(res, layer), "stain")

    def _job(self, slide: Any, method: str, region: Any, reference: str):
        import numpy as np

        from ..progress import Progress
        from ..stain import Normalizer, estimate, estimate_slide, load_reference

        yield Progress("target stain", 0, 2)
        if reference:
            target = load_reference(reference)
        else:
            r = region.clip(*slide.shape)
            rgb = np.asarray(slide.read_region(0, int(r.y), int(r.x), int(r.height),
                                               int(r.width)))
            target = estimate(rgb, source=f"region {r.describe()}")
        yield Progress("slide stain", 1, 2)
        return Normalizer(method, target, estimate_slide(slide))

    def _on_job_returned(self, normalizer: Any, layer: Any) -> None:
        self.normalizer = normalizer
        name = f"{layer.name} ({normalizer.method})"
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        levels = normalized_levels(layer.data, normalizer, layer.multiscale)
        self.viewer.add_image(
            levels if layer.multiscale else levels[0], name=name, rgb=True,
            multiscale=layer.multiscale, scale=layer.scale, translate=layer.translate,
            units=layer.units,
            metadata=LayerRecord(kind="stain", stain=normalizer.to_dict(), source=layer.name,
                                 fallback=normalizer.fallback).to_metadata())
        note = " (slide tissue degenerate: left as is)" if normalizer.fallback else ""
        self.status.setText(f"{name}: toggle its visibility to compare{note}")
