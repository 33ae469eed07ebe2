"""The typed record layers carry in ``layer.metadata['wsss']``: round trip, refusals."""

from __future__ import annotations

import pytest

from wsss_napari import WsssError
from wsss_napari.layer_record import KEY, VERSION, LayerRecord, geometry_of
from wsss_napari.params import PostprocParams
from wsss_napari.region import MaskGeometry, Region


class _Layer:
    def __init__(self, metadata, name="L"):
        self.metadata, self.name = metadata, name


def test_record_round_trips_through_a_plain_metadata_dict():
    geo = MaskGeometry(y=64, x=32, downsample=8.0, mpp=0.5, slide="s.tif")
    rec = LayerRecord(kind="correction", geometry=geo, postproc_params=PostprocParams(),
                      present=[True, False, True], region=[1, 2, 3, 4], source="s.tif",
                      extra={"attention_head": 7})
    meta = rec.to_metadata()
    assert list(meta) == [KEY] and type(meta[KEY]) is dict
    inner = meta[KEY]
    # the keys other code reads today keep their names and values
    assert inner["version"] == VERSION and inner["geometry"] == geo
    assert inner["region"] == (1, 2, 3, 4) and inner["present"] == (True, False, True)
    assert "model" not in inner and "slide_cams" not in inner  # None fields are left out
    assert inner["attention_head"] == 7  # a newer helper's key survives
    back = LayerRecord.from_layer(_Layer(meta))
    assert back == rec and back.geometry.downsample == 8.0
    changed = back.replace(edit_store="store")
    assert back.edit_store is None and changed.edit_store == "store"  # frozen: a copy
    with pytest.raises(AttributeError):
        back.kind = "mask"  # type: ignore[misc]


def test_geometry_as_a_dict_is_read_as_mask_geometry():
    geo = MaskGeometry(y=10, x=20, downsample=4.0, mpp=None, slide="a")
    rec = LayerRecord.from_metadata({KEY: {"version": VERSION, "kind": "mask",
                                           "geometry": geo.to_dict()}})
    assert rec.geometry == geo
    assert geometry_of({"geometry": geo.to_dict()}) == geo  # a layer made elsewhere
    assert geometry_of(rec.to_metadata()) == geo
    assert geometry_of({}) is None
    region = Region(y=5, x=6, height=7, width=8).to_dict()  # a Region's dict: (y, x, h, w)
    assert LayerRecord(kind="attention", region=region).region == (5, 6, 7, 8)


@pytest.mark.parametrize(("metadata", "message"), [
    ({}, "layer 'L' was not made by wsss-napari"),
    ({KEY: "x"}, "layer 'L' was not made by wsss-napari"),
    ({KEY: {"kind": "mask", "label_encoding": "class+1"}}, "version none \\(older plugin\\)"),
    ({KEY: {"version": VERSION + 1, "kind": "mask"}}, f"version {VERSION + 1}, this plugin"),
    ({KEY: {"version": VERSION}}, "says no kind"),
    ({KEY: {"version": VERSION, "kind": "heatmap"}}, "unknown layer kind 'heatmap'"),
    ({KEY: {"version": VERSION, "kind": "correction", "region": (1, 2)}}, "\\(y, x, h, w\\)"),
    ({KEY: {"version": VERSION, "kind": "mask", "geometry": 3}}, "must be a MaskGeometry"),
])
def test_foreign_old_or_malformed_records_are_refused_in_one_line(metadata, message):
    with pytest.raises(WsssError, match=message) as err:
        LayerRecord.from_layer(_Layer(metadata))
    assert "\n" not in str(err.value)
    assert LayerRecord.find(_Layer(metadata)) is None  # layer pickers skip such layers
