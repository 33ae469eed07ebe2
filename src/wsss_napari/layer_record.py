"""The typed record that layers made by wsss-napari carry in ``layer.metadata['wsss']``.

The widgets find each other's results through it (no global state): the CAM widget's maps
carry the cached ``slide_cams`` the tuning widget recomputes from, the pseudo-mask carries
its ``postproc_params`` and ``geometry``, the review widget's Correction layer its
``region``. napari keeps ``layer.metadata`` a plain dict, so a :class:`LayerRecord` is
written there with :meth:`LayerRecord.to_metadata` (a dict under :data:`KEY` with a
``version``; fields that are None are left out) and read back with
:meth:`LayerRecord.from_layer`, which refuses a layer of another program or of another
record version with one clear line. This is the only module that touches the dict's keys.

Some values are live objects that never leave the process (the open ``Slide``, the model,
the cached maps, the edit store); ``geometry`` is a
:class:`~wsss_napari.region.MaskGeometry` (its dict is accepted on reading). No Qt, no
napari import.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from . import WsssError
from .region import MaskGeometry, Region

#: Key of the record in ``layer.metadata``.
KEY = "wsss"
#: Version of the record layout; a layer with another version is refused.
VERSION = 1
#: What a layer is: per-class maps, a pseudo-mask (tuned), the review widget's editable
#: region, a ground truth, a mask opened from an export, the review queue's uncertainty map
#: and its brush over one queue item, a stain-normalised copy of a slide, attention maps,
#: the cells' points.
KINDS = ("cams", "mask", "correction", "ground_truth", "mask_file", "uncertainty",
         "queue_brush", "stain", "attention", "cells")

_TUPLE4 = ("region", "store_region")


@dataclass(frozen=True)
class LayerRecord:
    """Provenance of a layer made by the plugin (see the module docstring)."""

    kind: str
    #: Name of the slide layer the data lies on.
    source: str | None = None
    #: The open :class:`~wsss_napari.io.slide.Slide` (live object).
    slide: Any = None
    #: Where the layer's data lies on the slide (level-0 origin, downsample, mpp).
    geometry: MaskGeometry | None = None
    model: Any = None
    model_path: str | None = None
    model_hash: str | None = None
    cam_params: Any = None
    #: The cached ``SlideCams`` the maps show (cams layers only; live object).
    slide_cams: Any = None
    #: Foreground class shown by a cams layer.
    class_index: int | None = None
    #: ``id()`` of the ``SlideCams`` a pseudo-mask was computed from.
    slide_cams_id: int | None = None
    postproc_params: Any = None
    #: Mask layers: ``'seg'`` when a segmentation model made the mask (``'cam'`` or None:
    #: the CAMs + post-processing), and that model's file and sha256 (``model`` stays the
    #: maps' CAM model).
    mask_from: str | None = None
    mask_model_path: str | None = None
    mask_model_hash: str | None = None
    #: Per foreground class: False where the user suppressed it.
    present: tuple[bool, ...] | None = None
    label_names: tuple[str, ...] | None = None
    #: :data:`wsss_napari.labels_encoding.ENCODING` when the data is layer-encoded.
    label_encoding: str | None = None
    #: The slide's :class:`~wsss_napari.corrections.store.EditStore` (live object).
    edit_store: Any = None
    #: Correction layer: (y, x, h, w) of the region in the mask layer's and store's pixels.
    region: tuple[int, int, int, int] | None = None
    store_region: tuple[int, int, int, int] | None = None
    #: Correction layer: name of the mask layer it writes back into.
    mask_layer: str | None = None
    #: Mask opened from an export: the file and its run record (dict).
    source_file: str | None = None
    record: Mapping[str, Any] | None = None
    #: Review queue: the item a brush layer paints; the metric an uncertainty map shows.
    queue_item: Any = None
    uncertainty: str | None = None
    #: Stain-normalised image: the normaliser's dict and whether it fell back to identity.
    stain: Mapping[str, Any] | None = None
    fallback: bool | None = None
    #: Attention maps: the method (``rollout``/``grad-rollout``); cells: how many.
    attention: str | None = None
    cells: int | None = None
    #: Keys written by a newer helper that this version does not know (kept on round trips).
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise WsssError(f"unknown layer kind {self.kind!r}: one of {', '.join(KINDS)}")
        geo = self.geometry
        if isinstance(geo, Mapping):
            object.__setattr__(self, "geometry", MaskGeometry.from_dict(dict(geo)))
        elif geo is not None and not isinstance(geo, MaskGeometry):
            raise WsssError(f"layer geometry must be a MaskGeometry, not {type(geo).__name__}")
        for name in _TUPLE4:
            v = getattr(self, name)
            if isinstance(v, Mapping):  # a Region's dict (level-0 y, x, height, width)
                v = Region.from_dict(dict(v))
                v = (v.y, v.x, v.height, v.width)
            if v is not None:
                if len(v) != 4:
                    raise WsssError(f"layer {name} must be (y, x, h, w), got {v!r}")
                object.__setattr__(self, name, tuple(int(a) for a in v))
        if self.present is not None:
            object.__setattr__(self, "present", tuple(bool(p) for p in self.present))
        if self.label_names is not None:
            object.__setattr__(self, "label_names", tuple(str(n) for n in self.label_names))

    # ------------------------------------------------------------------ dict <-> record

    def to_metadata(self) -> dict[str, Any]:
        """``{KEY: {...}}``: the layer metadata entry (merge it into ``layer.metadata``)."""
        inner: dict[str, Any] = {"version": VERSION}
        for f in fields(self):
            if f.name == "extra":
                continue
            v = getattr(self, f.name)
            if v is not None:
                inner[f.name] = v
        return {KEY: {**self.extra, **inner}}

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any] | None,
                      name: str = "this layer") -> LayerRecord:
        """The record in a layer's ``metadata`` dict; WsssError when there is none or it is
        of another version or malformed."""
        inner = metadata.get(KEY) if isinstance(metadata, Mapping) else None
        if not isinstance(inner, Mapping):
            raise WsssError(f"layer '{name}' was not made by wsss-napari (no "
                            f"metadata['{KEY}'] record): compute it with the plugin's widgets")
        version = inner.get("version")
        if version != VERSION:
            raise WsssError(f"layer '{name}' carries a wsss-napari record of version "
                            f"{version if version is not None else 'none (older plugin)'}, "
                            f"this plugin reads version {VERSION}: recompute the layer")
        known = {f.name for f in fields(cls)} - {"extra"}
        kw = {k: v for k, v in inner.items() if k in known}
        extra = {k: v for k, v in inner.items() if k not in known and k != "version"}
        if "kind" not in kw:
            raise WsssError(f"layer '{name}': its wsss-napari record says no kind")
        try:
            return cls(**kw, extra=extra)
        except (TypeError, ValueError) as err:
            raise WsssError(f"layer '{name}': malformed wsss-napari record ({err})") from err

    @classmethod
    def from_layer(cls, layer: Any) -> LayerRecord:
        """The record of a napari layer (WsssError for a foreign or old layer)."""
        return cls.from_metadata(getattr(layer, "metadata", None),
                                 getattr(layer, "name", "this layer"))

    @classmethod
    def find(cls, layer_or_metadata: Any) -> LayerRecord | None:
        """The record of a layer (or of its metadata dict), None when it has none or one
        this version cannot read: for layer pickers, which simply skip such layers."""
        meta = layer_or_metadata if isinstance(layer_or_metadata, Mapping) else \
            getattr(layer_or_metadata, "metadata", None)
        try:
            return cls.from_metadata(meta)
        except WsssError:
            return None

    def store(self, layer: Any) -> None:
        """Write this record into ``layer.metadata`` (replacing the previous one)."""
        layer.metadata[KEY] = self.to_metadata()[KEY]

    def replace(self, **changes: Any) -> LayerRecord:
        """A copy with ``changes`` (the record is frozen)."""
        return replace(self, **changes)


def has_record(metadata: Any) -> bool:
    """True when a metadata dict has a ``KEY`` entry (readable or not): such a layer is the
    plugin's, never a slide."""
    return isinstance(metadata, Mapping) and KEY in metadata


def geometry_of(metadata: Mapping[str, Any] | None) -> MaskGeometry | None:
    """A layer's placement on its slide: the record's geometry, else a top-level
    ``metadata['geometry']`` (a MaskGeometry or its dict, for layers made elsewhere)."""
    rec = LayerRecord.find(metadata)
    if rec is not None and rec.geometry is not None:
        return rec.geometry
    geo = (metadata or {}).get("geometry")
    if isinstance(geo, Mapping):
        geo = MaskGeometry.from_dict(dict(geo))
    return geo if isinstance(geo, MaskGeometry) else None
