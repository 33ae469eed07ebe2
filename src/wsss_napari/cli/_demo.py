"""``wsss-napari demo``: napari with the plugin's widgets, a sample slide and the default model.

The demo opens a generated H&E-like slide (a pyramidal TIFF written once into the cache
folder) through the plugin's own reader, docks the four widgets, and computes the maps and
the tissue map right away, so the first thing a pathologist sees is the tool working. With
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
                   help="open this slide instead of the generated sample")
    p.add_argument("--size", type=int, default=3072,
                   help="edge (px) of the generated sample slide (default: 3072)")
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


def open_demo(viewer: Any, slide: Path, model: str = "default") -> dict[str, Any]:
    """Open ``slide`` in ``viewer``, dock the widgets and start the maps; returns the widgets."""
    layers = viewer.open(str(slide), plugin="wsss-napari")
    widgets, docks = {}, {}
    for i, name in enumerate(WIDGETS):
        docks[name], widgets[name] = viewer.window.add_plugin_dock_widget(
            "wsss-napari", name, tabify=i >= 2)
    docks["Pseudo-mask tuning"].raise_()
    cam = widgets["CAM"]
    cam.image_combo.layer = layers[0]
    cam.region_mode = "Whole slide"
    cam.params = cam.params.replace(scales=DEMO_SCALES)
    cam.model_source = model
    cam.run()
    return widgets


def run(args: argparse.Namespace) -> int:
    slide = args.slide if args.slide is not None else demo_slide(args.size)
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
