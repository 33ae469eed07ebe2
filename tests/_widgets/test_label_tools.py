"""napari's own label tools on the Correction layer, driven through its real mouse callbacks.

The layer holds ``class + 1`` (0 = not corrected), so the eraser means "forget my correction"
and never "tumor"; the fill bucket writes the chosen class; the picker picks a class; and
the autosaved store round-trips when the region is opened again.
"""

from __future__ import annotations

import numpy as np
import pytest

from wsss_napari.classes import BACKGROUND, NORMAL, STROMA, TUMOR
from wsss_napari.labels_encoding import ENCODING, from_layer, layer_value, to_layer

pytestmark = pytest.mark.gui

DS = 8  # the map is the 1024 px slide at 1/8


def _known_map() -> np.ndarray:
    """Left half tumor, right half stroma, a normal square, a background band at the top."""
    m = np.full((128, 128), TUMOR, np.uint8)
    m[:, 64:] = STROMA
    m[80:100, 10:30] = NORMAL
    m[:8] = BACKGROUND
    return m


def _mouse(layer, kind: str, yx: tuple[float, float]) -> None:
    """One real napari mouse event at data pixel ``yx`` of ``layer`` (world coordinates)."""
    from napari.utils._test_utils import read_only_mouse_event
    from napari.utils.interactions import (
        mouse_move_callbacks,
        mouse_press_callbacks,
        mouse_release_callbacks,
    )

    position = tuple(layer.data_to_world(np.asarray(yx, float)))
    event = read_only_mouse_event(type=f"mouse_{kind}", is_dragging=kind == "move",
                                  position=position, dims_displayed=[0, 1], button=1)
    {"press": mouse_press_callbacks, "move": mouse_move_callbacks,
     "release": mouse_release_callbacks}[kind](layer, event)


def _drag(layer, start: tuple[int, int], end: tuple[int, int]) -> None:
    _mouse(layer, "press", start)
    _mouse(layer, "move", end)
    _mouse(layer, "release", end)


@pytest.fixture
def review_on_known_map(viewer, small_slide, tmp_path):
    """The review widget with the Correction layer open over a map whose classes are known."""
    from wsss_napari.params import PostprocParams
    from wsss_napari.region import MaskGeometry

    (slide_layer,) = viewer.open(str(small_slide), plugin="wsss-napari")
    slide = slide_layer.metadata["slide"]
    viewer.add_labels(to_layer(_known_map()), name="Pseudo-mask", scale=(DS * 0.5,) * 2,
                      metadata={"wsss": {"postproc_params": PostprocParams(), "slide": slide,
                                         "geometry": MaskGeometry(downsample=float(DS), mpp=0.5),
                                         "source": slide_layer.name,
                                         "label_encoding": ENCODING}})
    _, review = viewer.window.add_plugin_dock_widget("wsss-napari", "Review and fine-tune")
    review.project = tmp_path / "project"
    layer = review.edit_region()
    assert layer is not None
    return review, layer


def _stored(review) -> np.ndarray:
    from wsss_napari.corrections.store import EditStore

    review.flush()
    store = EditStore.open(review.store.root, read_only=True)
    return store.read(0, 0, 128, 128)


def test_correction_layer_opens_with_a_class_and_class_colours(review_on_known_map):
    _, layer = review_on_known_map
    assert layer.selected_label == layer_value(TUMOR) == 1  # not napari's 0 = eraser
    assert layer.metadata["wsss"]["label_encoding"] == ENCODING
    np.testing.assert_array_equal(from_layer(layer.data), _known_map())
    cmap = layer.colormap
    assert cmap.map(0)[3] == 0  # "nothing" is transparent
    colours = {tuple(np.round(cmap.map(layer_value(c))[:3], 3)) for c in (TUMOR, STROMA, NORMAL)}
    assert len(colours) == 3 and all(cmap.map(layer_value(c))[3] > 0
                                     for c in (TUMOR, STROMA, NORMAL, BACKGROUND))


def test_eraser_means_uncorrected_not_tumor(qtbot, review_on_known_map):
    review, layer = review_on_known_map
    layer.brush_size = 5
    layer.mode = "paint"
    layer.selected_label = layer_value(NORMAL)
    _drag(layer, (40, 70), (40, 110))  # normal over stroma
    qtbot.wait(10)  # napari writes the labels after its paint event
    stored = _stored(review)
    assert (stored[40, 75:105] == NORMAL).all()
    assert (stored[60:] == 255).all()  # untouched pixels stay uncorrected

    layer.mode = "erase"
    _drag(layer, (40, 70), (40, 110))
    qtbot.wait(10)
    assert (layer.data[40, 75:105] == 0).all()
    stored = _stored(review)
    assert (stored[36:45, 66:115] == 255).all()  # forgotten, not tumor (0)
    assert not (stored == TUMOR).any()
    layer.mode = "erase"  # erasing untouched map pixels stores nothing either
    _drag(layer, (20, 20), (20, 40))
    qtbot.wait(10)
    assert (_stored(review) == 255).all()

    review.write_back()  # erased pixels show the map again, never tumor
    np.testing.assert_array_equal(from_layer(viewer_layer(review, "Pseudo-mask").data),
                                  _known_map())


def viewer_layer(review, name):
    return review.viewer.layers[name]


def test_fill_bucket_writes_the_chosen_class(qtbot, review_on_known_map):
    review, layer = review_on_known_map
    layer.mode = "fill"
    layer.selected_label = layer_value(NORMAL)
    _mouse(layer, "press", (60, 100))  # inside the stroma half
    _mouse(layer, "release", (60, 100))
    qtbot.wait(10)
    truth = _known_map()
    stroma = truth == STROMA
    assert (layer.data[stroma] == layer_value(NORMAL)).all()
    stored = _stored(review)
    assert (stored[stroma] == NORMAL).all()
    assert (stored[~stroma] == 255).all()


def test_picker_picks_the_class(review_on_known_map):
    _, layer = review_on_known_map
    layer.mode = "pick"
    for yx, cls in (((90, 20), NORMAL), ((60, 100), STROMA), ((3, 50), BACKGROUND),
                    ((60, 20), TUMOR)):
        _mouse(layer, "press", yx)
        assert layer.selected_label == layer_value(cls)


def test_autosave_round_trips_when_the_region_is_reopened(qtbot, review_on_known_map):
    review, layer = review_on_known_map
    layer.brush_size = 5
    layer.mode = "paint"
    layer.selected_label = layer_value(STROMA)
    _drag(layer, (90, 15), (90, 25))  # stroma over the normal square
    layer.mode = "erase"
    _drag(layer, (92, 15), (92, 25))  # and part of it erased again
    qtbot.waitUntil(lambda: review.autosaver.saves > 0 and review.autosaver.pending == 0,
                    timeout=10_000)  # the background autosave, no explicit flush
    expected = _known_map()
    stored = _stored(review)
    kept = stored != 255
    assert kept.any() and (stored[kept] == STROMA).all()
    expected[kept] = STROMA

    again = review.edit_region()  # a fresh layer from the store
    assert again is not layer or not np.shares_memory(again.data, layer.data)
    np.testing.assert_array_equal(from_layer(again.data), expected)
    assert review.painted.sum() == kept.sum()
