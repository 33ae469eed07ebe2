"""``wsss-napari demo``: napari with the plugin's widgets, a sample slide and the default model.

The demo opens a real H&E slide (``sample_data/CMU-1-crop.tif``, a crop of OpenSlide's CMU-1;
with ``--synthetic`` or outside a source checkout, a generated slide written once into the
cache folder) through the plugin's own reader, docks the four widgets, and computes the maps
and the tissue map right away, so the first thing a pathologist sees is the tool working. With
``--screenshot`` it waits for the first tissue map, saves a picture of the whole window and
exits (that is what ``./dev demo`` does where there is no display).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from .. import WsssError

WIDGETS = ("CAM", "Pseudo-mask tuning", "Review and fine-tune", "Export")
#: Scales of the demo's first run: one scale keeps the first maps quick on a laptop CPU.
DEMO_SCALES = (1.0,)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "demo", help="open napari with the plugin's widgets, a sample slide and the model",
        description=__doc__.split("\n\n")[1],
    )
    p.add_argument("--slide", type=Path, default=None,
                   help="open this slide instead of the real H&E sample (sample_data/)")
    p.add_argument("--synthetic", action="store_true",
                   help="open a generated slide instead of the real H&E sample")
    p.add_argument("--size", type=int, default=3072,
                   help="with --synthetic: edge (px) of the generated slide (default: 3072)")
    p.add_argument("--model", default="default",
                   help="'default' or a checkpoint file (.safetensors)")
    p.add_argument("--screenshot", type=Path, default=None,
                   help="save a screenshot of the window once the first maps are shown, "
                   "then exit")
    p.add_argument("--timeout", type=float, default=900.0,
                   help="with --screenshot: give up waiting after this many seconds")
    p.set_defaults(func=run)


def demo_slide(size: int) -> Path:
    """The generated sample slide of ``size`` px a side (written once into the cache)."""
    from ..sample.napari_samples import sample_slide_path

    if not 256 <= size <= 200_000:
        raise WsssError(f"--size must be within 256..200000 px, not {size}")
    return sample_slide_path(size=(size, size))


#: Dock layout of the right-hand area: two columns, each a list of slots from top to bottom,
#: a slot being one dock or a tab group whose first dock is shown. The tuning sliders, what a
#: pathologist uses most, are always in view under the CAM widget; review and export share
#: the second column (each column's widgets fit a 1000 px high screen).
DOCK_COLUMNS = ((("CAM",), ("Pseudo-mask tuning",)), (("Review and fine-tune", "Export"),))


def dock_widgets(viewer: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Dock the plugin's widgets as :data:`DOCK_COLUMNS` says; returns (widgets, docks)."""
    from qtpy.QtCore import Qt, QTimer

    widgets, docks = {}, {}
    for column in DOCK_COLUMNS:
        for slot in column:
            for name in slot:
                docks[name], widgets[name] = viewer.window.add_plugin_dock_widget(
                    "wsss-napari", name)
    qt_window = viewer.window._qt_window  # napari has no API for columns of docks
    heads = [[docks[slot[0]] for slot in column] for column in DOCK_COLUMNS]
    for left, right in zip(heads, heads[1:], strict=False):
        qt_window.splitDockWidget(left[0], right[0], Qt.Orientation.Horizontal)
    for column in heads:
        for upper, lower in zip(column, column[1:], strict=False):
            qt_window.splitDockWidget(upper, lower, Qt.Orientation.Vertical)
    for slot in (slot for column in DOCK_COLUMNS for slot in column):
        for name in slot[1:]:
            qt_window.tabifyDockWidget(docks[slot[0]], docks[name])
    # each slot as high as its widgets need; the rest goes to the last slot of the column
    for column in heads:
        need = [d.widget().minimumSizeHint().height() for d in column]
        need[-1] += 2000
        qt_window.resizeDocks(column, need, Qt.Orientation.Vertical)
    # show each group's first dock (Qt shows the last tab added), once Qt has built the
    # tab bars (a raise before that is lost)
    for dock in (d for column in heads for d in column):
        QTimer.singleShot(0, dock.raise_)
    return widgets, docks


def open_demo(viewer: Any, slide: Path, model: str = "default") -> dict[str, Any]:
    """Open ``slide`` in ``viewer``, dock the widgets and start the maps; returns the widgets."""
    layers = viewer.open(str(slide), plugin="wsss-napari")
    widgets, docks = dock_widgets(viewer)
    cam = widgets["CAM"]
    cam.image_combo.layer = layers[0]
    cam.region_mode = "Whole slide"
    cam.params = cam.params.replace(scales=DEMO_SCALES)
    cam.model_source = model
    cam.run()
    return widgets


def default_slide(synthetic: bool, size: int) -> Path:
    """The real H&E sample where the checkout has it (unless ``synthetic``), else a generated."""
    from ..sample.napari_samples import REAL_SAMPLE

    if not synthetic and REAL_SAMPLE.is_file():
        return REAL_SAMPLE
    return demo_slide(size)


def run(args: argparse.Namespace) -> int:
    slide = args.slide if args.slide is not None else default_slide(args.synthetic, args.size)
    if not Path(slide).exists():
        raise WsssError(f"slide '{slide}' does not exist")
    try:
        import napari
    except ImportError as err:
        raise WsssError("napari is not installed: pip install 'wsss-napari[napari]'") from err

    from .._widgets._worker import preload_torch

    preload_torch()  # before the viewer's OpenGL context exists (see preload_torch)
    viewer = napari.Viewer(title="wsss-napari demo")
    viewer.window.resize(1600, 1000)
    widgets = open_demo(viewer, Path(slide), args.model)
    if args.screenshot is not None:
        _screenshot_when_ready(viewer, widgets, args.screenshot, args.timeout)
    napari.run()
    return _STATE.get("code", 0)


#: Exit code and the polling timer of the screenshot mode (kept alive here).
_STATE: dict[str, Any] = {}


def _screenshot_when_ready(viewer: Any, widgets: dict, path: Path, timeout: float) -> None:
    """Poll until the maps and the tissue map are shown (or the job failed), then save the
    window and close napari."""
    from qtpy.QtCore import QTimer

    cam, tune = widgets["CAM"], widgets["Pseudo-mask tuning"]
    start = time.monotonic()
    timer = _STATE["timer"] = QTimer()

    def ready() -> bool:
        if cam.busy or tune.busy:
            return False
        return tune.mask_layer is not None or not any(
            lyr.name.startswith("CAM ") for lyr in viewer.layers)

    def on_tick() -> None:
        timed_out = time.monotonic() - start > timeout
        if not (ready() or timed_out):
            return
        timer.stop()
        ok = tune.mask_layer is not None
        if not ok:
            print(f"wsss-napari demo: no tissue map shown ({cam.status.text()})",  # noqa: T201
                  file=sys.stderr)
        viewer.reset_view()
        QTimer.singleShot(800, lambda: _save_and_quit(viewer, path, 0 if ok else 1))

    timer.timeout.connect(on_tick)
    timer.start(500)


def _save_and_quit(viewer: Any, path: Path, code: int) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(path), canvas_only=False, flash=False)
    print(f"wsss-napari demo: screenshot saved to {path}")  # noqa: T201
    _STATE["code"] = code
    viewer.close()
