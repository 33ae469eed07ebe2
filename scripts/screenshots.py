"""Screenshots of the user guide, taken from the real viewer (docs/images/*.png).

Drives the whole review loop on the generated sample slide with the default model, the way
a pathologist would click through it, and saves the window after each step::

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python scripts/screenshots.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def wait(condition, timeout: float = 600.0) -> None:
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    t0 = time.monotonic()
    while not condition():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError("the viewer did not get there in time")
        app.processEvents()
        time.sleep(0.02)
    for _ in range(20):  # let the canvas catch up
        app.processEvents()
        time.sleep(0.02)


def compact(path: Path) -> None:
    """Re-save a screenshot with a 256-colour palette (about 4x smaller in the repository)."""
    from PIL import Image

    with Image.open(path) as im:
        small = im.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)


def shot(viewer, out: Path, name: str) -> None:
    path = out / name
    viewer.screenshot(str(path), canvas_only=False, flash=False)
    compact(path)
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")  # noqa: T201


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    ap.add_argument("--size", type=int, default=3072)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    from wsss_napari._widgets._worker import preload_torch

    preload_torch()
    import napari

    from wsss_napari.classes import TUMOR
    from wsss_napari.cli._demo import demo_slide, open_demo
    from wsss_napari.params import FinetuneParams

    viewer = napari.Viewer(title="wsss-napari")
    viewer.window.resize(1600, 1000)
    widgets = open_demo(viewer, demo_slide(args.size))
    cam, tune = widgets["CAM"], widgets["Pseudo-mask tuning"]
    review, export = widgets["Review and fine-tune"], widgets["Export"]
    docks = {n: w.parent() for n, w in widgets.items()}  # the dock wrapping each widget

    # 1. the maps
    wait(lambda: not cam.busy and "CAM tumor" in viewer.layers)
    wait(lambda: tune.mask_layer is not None and not tune.busy)
    tune.mask_layer.visible = False
    viewer.layers[0].opacity = 0.6
    viewer.reset_view()
    shot(viewer, args.out, "cam.png")

    # 2. live tuning
    tune.mask_layer.visible = True
    tune.mask_layer.opacity = 0.6
    for name in ("CAM tumor", "CAM stroma", "CAM normal"):
        viewer.layers[name].visible = False
    viewer.layers[0].opacity = 1.0
    docks["Pseudo-mask tuning"].raise_()
    tune.params = tune.params.replace(bg_exponent=4.0, min_region=400)
    wait(lambda: not tune.busy)
    shot(viewer, args.out, "tune.png")

    # 3. correction
    docks["Review and fine-tune"].raise_()
    review.project = Path(tempfile.mkdtemp(prefix="wsss-guide-"))
    h, w = tune.mask_layer.data.shape
    layer = review.edit_region((0, 0, h, w))
    layer.brush_size = max(8, h // 12)
    for i in range(6):
        layer.paint((h // 3 + i * h // 40, w // 3 + i * w // 25), TUMOR)
    tune.mask_layer.visible = False
    wait(lambda: True)
    shot(viewer, args.out, "correct.png")

    # 4. fine-tuning
    review.write_back()
    review.finetune.params = FinetuneParams(steps=12, batch_size=2, crop_size=96)
    worker = review.finetune.start()
    done = []
    worker.finished.connect(lambda: done.append(1))
    wait(lambda: bool(done))
    shot(viewer, args.out, "finetune.png")

    # 5. export
    docks["Export"].raise_()
    tune.mask_layer.visible = True
    export.folder = Path(review.project) / "export"
    worker = export.export()
    done.clear()
    worker.finished.connect(lambda: done.append(1))
    wait(lambda: bool(done))
    shot(viewer, args.out, "export.png")
    viewer.close()
    demo = args.out / "demo.png"  # made by `wsss-napari demo --screenshot docs/images/demo.png`
    if demo.exists():
        compact(demo)
    return 0


if __name__ == "__main__":
    sys.exit(main())
