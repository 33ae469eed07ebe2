"""The Review queue widget on real CAMs of a generated slide: step, decide, restart."""

from __future__ import annotations

import numpy as np
import pytest

from wsss_napari.classes import NORMAL, TUMOR
from wsss_napari.params import UncertaintyParams

pytestmark = pytest.mark.gui


def _cams(whole_slide_cams, slide_path, model_path):
    slide_layer, cam = whole_slide_cams(slide_path, model_path)
    return slide_layer, cam.last_result


def _world_box(layer, item):
    """World box of an item computed from the layer's pixel size, independently of the
    widget: CAM pixel (r, c) covers level-0 [r * d, (r + 1) * d) (slide scale 1 per level-0
    px under the reader's placement)."""
    r0, c0, h, w = item.box
    s = np.asarray(layer.scale[-2:], float)
    t = np.asarray(layer.translate[-2:], float) - s / 2
    return t + np.array([r0, c0]) * s, t + np.array([r0 + h, c0 + w]) * s


def test_review_queue_steps_decides_and_survives_a_restart(qtbot, viewer, small_slide,
                                                           tiny_model_path, tmp_path,
                                                           whole_slide_cams):
    from napari.utils.key_bindings import coerce_keybinding

    from wsss_napari._widgets._queue import (
        BRUSH_LAYER,
        CONTEXT,
        ITEM_LAYER,
        KEYS,
        QueueWidget,
        canvas_size,
    )
    from wsss_napari.corrections.store import EditStore
    from wsss_napari.labels_encoding import layer_value

    slide_layer, result = _cams(whole_slide_cams, small_slide, tiny_model_path)
    _, widget = viewer.window.add_plugin_dock_widget("wsss-napari", "Review queue")
    assert widget.cams_combo.layer is not None
    widget.project = tmp_path
    widget.params = UncertaintyParams(mode="tile", tile=64, min_area=0)
    queue = widget.open_queue()
    assert queue is not None and len(queue) >= 4
    assert (tmp_path / "small.tif.wsss" / "review_queue.json").is_file()
    first = queue.current()
    assert first.rank == 1
    # the view is centred on the first item and zoomed so that it fills a third of it
    lo, hi = _world_box(widget.cams_layer, first)
    np.testing.assert_allclose(_camera(viewer).center[-2:], (lo + hi) / 2)
    assert _camera(viewer).zoom == pytest.approx(float(np.min(canvas_size(viewer)
                                                            / ((hi - lo) * CONTEXT))))
    rect = np.asarray(viewer.layers[ITEM_LAYER].data[0])
    np.testing.assert_allclose(rect.min(0), lo)
    np.testing.assert_allclose(rect.max(0), hi)
    # level-0 box of the item: the CAM map's pixel size is result.downsample level-0 px
    assert first.region.y == first.box[0] * result.downsample
    assert first.region.height == first.box[2] * result.downsample

    widget.act("next")
    second = queue.current()
    assert second.rank == 2
    widget.buttons["tumor"].click()  # relabel: saved into the edit store, move on
    assert queue.decisions[second.id].label == TUMOR
    assert queue.current().rank == 3
    store = EditStore.open(tmp_path / "small.tif.wsss" / "edits.zarr", read_only=True)
    assert store.downsample == result.downsample
    r0, c0, h, w = second.box
    edits = store.read(r0, c0, h, w)
    assert (edits[second.mask] == TUMOR).all() and (edits[~second.mask] == 255).all()
    # keyboard: Shift-3 relabels as normal (the third class)
    viewer.keymap[coerce_keybinding(KEYS["normal"])](viewer)
    third = queue.items[2]
    assert queue.decisions[third.id].label == NORMAL
    # exclude the fourth: out of the queue, no edits
    fourth = queue.current()
    widget.act("exclude")
    assert fourth not in queue.active()
    # the brush paints the fifth (class + 1 encoding, 0 = keep); Accept writes the painting
    fifth = queue.current()
    brush = widget.open_brush()
    assert brush.name == BRUSH_LAYER and brush.mode == "paint"
    assert brush.selected_label == layer_value(fifth.cls)
    brush.data[...] = np.where(fifth.mask, layer_value(NORMAL), 0)
    widget.act("accept")
    assert BRUSH_LAYER not in viewer.layers
    r0, c0, h, w = fifth.box
    assert (store.read(r0, c0, h, w)[fifth.mask] == NORMAL).all()
    assert queue.decisions[fifth.id].label == NORMAL
    assert widget.status.text().startswith(f"3 of {len(queue) - 1} reviewed, ")
    assert widget.status.text().endswith("mm², 1 excluded")
    position = queue.position
    current = queue.current()
    widget.close()
    assert coerce_keybinding(KEYS["next"]) not in viewer.keymap  # a closed widget lets go

    # restart: a new widget reopens the saved queue, decisions and position
    _camera(viewer).center = (0, 0)
    again = QueueWidget(viewer)
    again.project = tmp_path
    reopened = again.open_queue()
    assert reopened is not queue and reopened.position == position
    assert reopened.current().id == current.id
    assert {k: (d.action, d.label) for k, d in reopened.decisions.items()} == \
        {k: (d.action, d.label) for k, d in queue.decisions.items()}
    assert again.status.text() == widget.status.text()
    lo, hi = _world_box(again.cams_layer, current)
    np.testing.assert_allclose(_camera(viewer).center[-2:], (lo + hi) / 2)
    assert again.item_label.text().startswith(f"#{current.rank}: ")
    assert "uncertainty" in again.item_label.text()
    # rebuilt with the expected-gain ranking (the form carries the field): the label says so
    gain = UncertaintyParams(mode="tile", tile=64, min_area=0, score="expected_gain")
    again.params = gain
    assert again.params == gain
    rebuilt = again.open_queue(rebuild=True)
    assert rebuilt.params.score == "expected_gain" and len(rebuilt) == len(queue)
    assert "expected gain" in again.item_label.text()


def _camera(viewer):
    return getattr(viewer, "scene", viewer).camera  # napari >= 0.9: scene


def test_an_excluded_item_stays_out_of_finetuning_with_pseudo_labels_elsewhere(
        qtbot, viewer, small_slide, tiny_model_path, tmp_path, whole_slide_cams):
    """Exclude clears the item's edits; fine-tuning with 'pseudo elsewhere' must not give
    its pixels the map's class back: they are ignored (255), the rest of the region is
    learned. Checked on what the saved fine-tuned version says it learned from."""
    from wsss_napari.models.versioning import list_versions
    from wsss_napari.params import FinetuneParams

    _, tune = viewer.window.add_plugin_dock_widget("wsss-napari", "Pseudo-mask tuning")
    slide_layer, cam = whole_slide_cams(small_slide, tiny_model_path)
    qtbot.waitUntil(lambda: tune.mask_layer is not None and not tune.busy, timeout=30_000)

    _, queue_widget = viewer.window.add_plugin_dock_widget("wsss-napari", "Review queue")
    queue_widget.project = tmp_path
    queue_widget.params = UncertaintyParams(mode="tile", tile=64, min_area=0)
    queue = queue_widget.open_queue()
    excluded = queue.current()
    queue_widget.act("exclude")
    assert queue.excluded(excluded)

    _, review = viewer.window.add_plugin_dock_widget("wsss-napari", "Review and fine-tune")
    review.project = tmp_path
    layer = review.edit_region()  # the whole (small) map, on the CAM grid
    assert layer.data.shape == tuple(cam.last_result.cams.shape[-2:])
    panel = review.finetune
    panel.params = FinetuneParams(steps=1, batch_size=1, crop_size=32, pseudo_elsewhere=True)
    with qtbot.waitSignal(panel.start().finished, timeout=120_000):
        pass
    (version,) = list_versions(tmp_path / "small.tif.wsss" / "models")
    learned = sum(version.finetune["labelled_pixels"].values())
    # every pixel of the region is a (pseudo-)label except the excluded item's
    assert learned == layer.data.size - excluded.area_px
