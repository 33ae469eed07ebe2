"""napari glue shared by the widgets: layer pickers, field of view, class colormaps, lifecycle.

Layers made by the widgets carry their provenance in ``layer.metadata['wsss']`` (a dict):
``slide_cams`` (the cached CAMs the tuning widget recomputes from), ``model`` and
``model_path``/``model_hash``, ``cam_params``/``postproc_params``, ``source`` (the slide
layer's name) and ``geometry`` (the :class:`~wsss_napari.region.MaskGeometry` placing the
layer's data on the slide; exports and edits read it). That is how the widgets find each
other's results without any global state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from qtpy.QtWidgets import QComboBox

from .. import WsssError
from ..classes import CLASS_NAMES, PALETTE
from ..labels_encoding import core_labels, layer_colors
from ..region import MaskGeometry, Region

WSSS = "wsss"


def wsss_meta(layer: Any) -> dict:
    """The widgets' provenance dict of ``layer`` (empty if the layer is not ours)."""
    meta = getattr(layer, "metadata", None) or {}
    return meta.get(WSSS, {}) if isinstance(meta.get(WSSS, {}), dict) else {}


def is_slide_layer(layer: Any) -> bool:
    from napari.layers import Image

    return isinstance(layer, Image) and layer.rgb and WSSS not in layer.metadata


def is_labels_layer(layer: Any) -> bool:
    from napari.layers import Labels

    return isinstance(layer, Labels)


def is_cam_layer(layer: Any) -> bool:
    return "slide_cams" in wsss_meta(layer)


def is_shapes_layer(layer: Any) -> bool:
    from napari.layers import Shapes

    return isinstance(layer, Shapes)


class LayerCombo(QComboBox):
    """A combo box of the viewer's layers that pass ``accept``, kept in sync with the viewer."""

    def __init__(self, viewer: Any, accept: Callable[[Any], bool], parent=None,
                 unique_by: Callable[[Any], Any] | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.accept = accept
        self.unique_by = unique_by
        for ev in (viewer.layers.events.inserted, viewer.layers.events.removed,
                   viewer.layers.events.moved):
            ev.connect(self._on_layers_changed)
        self._on_layers_changed()

    @property
    def layer(self) -> Any | None:
        """The chosen layer, or None."""
        name = self.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None

    @layer.setter
    def layer(self, layer: Any) -> None:
        self._on_layers_changed()
        self.setCurrentText(layer.name)

    def _on_layers_changed(self, event: Any = None) -> None:
        current = self.currentText()
        seen, names = set(), []
        for lyr in reversed(list(self.viewer.layers)):  # top layer first
            if not self.accept(lyr):
                continue
            key = self.unique_by(lyr) if self.unique_by else lyr.name
            if key in seen:
                continue
            seen.add(key)
            names.append(lyr.name)
        self.blockSignals(True)
        self.clear()
        self.addItems(names)
        if current in names:
            self.setCurrentText(current)
        self.blockSignals(False)
        if current not in names:
            self.currentIndexChanged.emit(self.currentIndex())


def slide_of(layer: Any):
    """The :class:`~wsss_napari.io.slide.Slide` behind an image layer.

    Layers from the plugin's reader carry it in ``metadata['slide']``; any other RGB image
    layer (a PNG patch, a sample) is wrapped as an in-memory slide.
    """
    from ..io.slide import Slide

    slide = layer.metadata.get("slide")
    if slide is not None:
        return slide
    if not getattr(layer, "rgb", False):
        raise WsssError(f"layer '{layer.name}' is not an RGB image: choose an H&E slide")
    levels = list(layer.data) if layer.multiscale else [layer.data]
    mpp = layer.metadata.get("mpp")
    slide = Slide.from_arrays(levels, mpp=mpp, name=layer.name)
    layer.metadata["slide"] = slide
    return slide


def field_of_view(layer: Any) -> Region:
    """The level-0 region of ``layer``'s data that the canvas shows.

    For a multiscale layer napari keeps the corner pixels at the displayed data level; they
    are mapped back to level 0 with that level's downsample factors (as stardist-napari does).
    """
    corners = np.asarray(layer.corner_pixels, dtype=float)[:, -2:].copy()
    corners[1] += 1  # napari's corner pixels are inclusive
    if layer.multiscale:
        factors = np.asarray(layer.downsample_factors[layer.data_level], dtype=float)[:2]
        corners = corners * factors
        shape0 = np.asarray(layer.level_shapes[0][:2])
    else:
        shape0 = np.asarray(layer.data.shape[:2])
    lo = np.clip(np.floor(corners[0]), 0, shape0).astype(int)
    hi = np.clip(np.ceil(corners[1]), 0, shape0).astype(int)
    if np.any(hi - lo <= 0):
        raise WsssError("the slide is not in view: zoom or pan to it, or choose 'Whole slide'")
    return Region(y=int(lo[0]), x=int(lo[1]), height=int(hi[0] - lo[0]),
                  width=int(hi[1] - lo[1]))


def shapes_bbox(shapes_layer: Any, image_layer: Any) -> Region:
    """Bounding box in level-0 pixels of ``image_layer`` of all shapes."""
    if len(shapes_layer.data) == 0:
        raise WsssError(f"Shapes layer '{shapes_layer.name}' is empty: draw a rectangle first")
    pts = np.concatenate([np.asarray(s)[:, -2:] for s in shapes_layer.data])
    world = np.array([shapes_layer.data_to_world(p) for p in pts])[:, -2:]
    data = np.array([image_layer.world_to_data(p) for p in world])[:, -2:]
    lo = np.maximum(np.floor(data.min(0)), 0).astype(int)
    hi = np.ceil(data.max(0)).astype(int)
    if np.any(hi - lo <= 0):
        raise WsssError(f"the shapes of '{shapes_layer.name}' enclose no pixel of the slide")
    return Region(y=int(lo[0]), x=int(lo[1]), height=int(hi[0] - lo[0]),
                  width=int(hi[1] - lo[1]))


def placement(slide_layer: Any, geometry: MaskGeometry) -> dict:
    """``scale``/``translate`` that put an array placed by ``geometry`` on ``slide_layer``.

    Map pixel ``i`` covers level-0 pixels ``[o + d*i, o + d*i + d)``, whose centre is at
    ``o + d*i + (d - 1) / 2`` in level-0 pixel-centre coordinates; napari puts pixel centres
    at ``translate + i * scale``.
    """
    s = np.asarray(slide_layer.scale[-2:], dtype=float)
    t = np.asarray(slide_layer.translate[-2:], dtype=float)
    d = float(geometry.downsample)
    origin = np.array([geometry.y, geometry.x], dtype=float)
    return {"scale": tuple(s * d), "translate": tuple(t + (origin + (d - 1) / 2) * s),
            "units": tuple(slide_layer.units)[-2:]}


def class_colormap(index: int):
    """Black-to-class-colour colormap of foreground class ``index`` (for additive blending)."""
    from napari.utils.colormaps import Colormap

    rgb = np.asarray(PALETTE[index], dtype=float) / 255
    rgb = rgb / max(rgb.max(), 1e-6)  # full brightness, same hue
    return Colormap(np.array([[0, 0, 0, 1], [*rgb, 1]]), name=f"wsss-{CLASS_NAMES[index]}")


def labels_colormap(background_alpha: float = 0.0):
    """WSSS4LUAD colours for a layer-encoded Labels layer (:mod:`wsss_napari.labels_encoding`:
    ``class + 1``, ``0`` = nothing, transparent); background at ``background_alpha``."""
    from napari.utils.colormaps import DirectLabelColormap

    return DirectLabelColormap(color_dict=layer_colors(background_alpha))


def layer_mask(layer: Any) -> np.ndarray:
    """A Labels layer's map in the core encoding (``0`` tumor .. ``3``, ``255`` none): the one
    place where widgets read labels back from a layer."""
    data = layer.data[0] if layer.multiscale else layer.data
    return core_labels(data, layer.metadata)


def install_lifecycle(viewer: Any) -> None:
    """Close a slide's file store when its layer leaves the viewer (idempotent per viewer)."""
    emitter = viewer.layers.events.removed
    if any(cb is _on_layers_removed for cb in emitter.callbacks):
        return
    emitter.connect(_on_layers_removed)


def _on_layers_removed(event: Any) -> None:
    layer = event.value
    meta = getattr(layer, "metadata", None) or {}
    if "slide" not in meta or WSSS in meta:
        return
    viewer_layers = event.source
    still_used = any(getattr(lyr, "metadata", {}).get("slide") is meta["slide"]
                     for lyr in viewer_layers)
    if still_used:
        return
    try:
        from ..io.slide import close_layer_slide
    except ImportError:  # older core: close the slide directly
        meta["slide"].close()
        return
    close_layer_slide(meta)


def region_rgb(slide: Any, geometry: MaskGeometry, shape: tuple[int, int]) -> np.ndarray:
    """The slide's RGB under a map of ``shape`` placed by ``geometry``."""
    from ..inference.slide_mask import region_rgb as _core

    return _core(slide, geometry, shape)
