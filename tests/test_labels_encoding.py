"""Layer encoding (class + 1, 0 = nothing) <-> core encoding (0 tumor .. 3, 255 = none)."""

from __future__ import annotations

import numpy as np
import pytest

from wsss_napari import WsssError
from wsss_napari.classes import BACKGROUND, NORMAL, STROMA, TUMOR
from wsss_napari.labels_encoding import (
    ENCODING,
    core_labels,
    from_layer,
    layer_colors,
    layer_value,
    to_layer,
)


def test_round_trip_and_nothing_is_not_a_class():
    core = np.array([[TUMOR, STROMA, NORMAL, BACKGROUND, 255]], np.uint8)
    layer = to_layer(core)
    np.testing.assert_array_equal(layer, [[1, 2, 3, 4, 0]])
    np.testing.assert_array_equal(from_layer(layer), core)
    assert from_layer(np.zeros((2, 2), np.int32)).tolist() == [[255, 255], [255, 255]]
    assert layer.dtype == np.uint8 and from_layer(layer).dtype == np.uint8
    assert layer_value(TUMOR) == 1


def test_values_that_are_no_class_are_refused():
    with pytest.raises(WsssError, match="value 7"):
        to_layer(np.array([[0, 7]], np.uint8))
    with pytest.raises(WsssError, match="label 5, which is no class"):
        from_layer(np.array([[1, 5]], np.int32))  # napari's "new label" shortcut
    with pytest.raises(WsssError):
        layer_value(4)


def test_colours_and_the_metadata_marker():
    colours = layer_colors()
    assert colours[0][3] == 0 and colours[None][3] == 0
    assert colours[1][:3] != colours[2][:3] and colours[4][3] == 0
    assert layer_colors(0.5)[4][3] == 0.5
    data = np.array([[1, 0]], np.uint8)
    np.testing.assert_array_equal(core_labels(data, {"wsss": {"label_encoding": ENCODING}}),
                                  [[0, 255]])
    np.testing.assert_array_equal(core_labels(data, {}), [[1, 0]])  # a challenge mask file
