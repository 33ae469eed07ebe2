"""Viewer responsiveness while fine-tuning: pan/zoom frame time in a real napari viewer.

Three conditions, same viewer, same slide, same camera path (N frames of pan + zoom, each
followed by processing Qt events and rendering the canvas):

1. idle: nothing else runs;
2. ours: fine-tuning runs in a napari thread worker (as the "Review & fine-tune" widget does);
3. naive baseline: the same fine-tuning steps run on the GUI thread, one step per frame
   (as a widget that trains without a worker would).

Run (needs a display; Xvfb is fine)::

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python benchmarks/bench_responsiveness.py
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def frame_times(viewer, n: int, step=None) -> list[float]:
    """Seconds per frame of a pan/zoom path; ``step()`` runs before each frame if given."""
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    camera = getattr(viewer, "scene", viewer).camera  # napari >= 0.9: viewer.scene.camera
    h, w = viewer.layers[0].extent.world[1]
    out = []
    for i in range(n):
        t = time.perf_counter()
        if step is not None:
            step()
        a = 2 * np.pi * i / n
        camera.center = (h / 2 + h / 4 * np.sin(a), w / 2 + w / 4 * np.cos(a))
        camera.zoom = 0.3 * (1.5 + np.sin(2 * a))
        app.processEvents()
        viewer.screenshot(canvas_only=True, flash=False)  # forces a full render
        out.append(time.perf_counter() - t)
    return out


def summary(name: str, times: list[float]) -> dict:
    ms = sorted(1000 * t for t in times)
    d = {"name": name, "median_ms": statistics.median(ms), "p95_ms": ms[int(0.95 * len(ms)) - 1],
         "fps": 1000 / statistics.median(ms)}
    print(f"{name:<38} median {d['median_ms']:7.1f} ms   p95 {d['p95_ms']:7.1f} ms   "  # noqa: T201
          f"{d['fps']:5.1f} fps")
    return d


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--size", type=int, default=3072, help="generated slide edge (px)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for training")
    args = ap.parse_args()

    from wsss_napari._widgets._worker import preload_torch

    preload_torch()
    import napari
    import torch
    from napari.qt.threading import create_worker
    from qtpy.QtWidgets import QApplication

    from wsss_napari.models.checkpoint import load_model
    from wsss_napari.params import FinetuneParams
    from wsss_napari.sample.napari_samples import sample_slide_path
    from wsss_napari.sample.synth import make_tissue
    from wsss_napari.train.finetune import FinetuneControl, finetune

    torch.set_num_threads(args.threads)
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1400, 900)
    viewer.open(str(sample_slide_path(size=(args.size, args.size))), plugin="wsss-napari")
    model = load_model("default")
    rgb, mask = make_tissue(512, 512, seed=1)
    samples = [(rgb, mask)]
    params = FinetuneParams(steps=100_000, batch_size=2, crop_size=224)
    frame_times(viewer, 10)  # warm up textures and shaders

    print(f"napari {napari.__version__}, {args.frames} frames, slide {args.size}^2 px, "  # noqa: T201
          f"model {model.config.backbone}, torch threads {args.threads}")
    idle = summary("idle", frame_times(viewer, args.frames))

    control = FinetuneControl()
    steps = []
    worker = create_worker(lambda: (yield from finetune(model, samples, params, control)),
                           _start_thread=False)
    worker.yielded.connect(lambda p: steps.append(p.done))
    worker.start()
    app = QApplication.instance()
    t0 = time.perf_counter()
    while not steps and time.perf_counter() - t0 < 120:  # training has really started
        app.processEvents()
        time.sleep(0.01)
    t0, s0 = time.perf_counter(), len(steps)
    ours = summary("fine-tuning in a worker (ours)", frame_times(viewer, args.frames))
    rate = (len(steps) - s0) / (time.perf_counter() - t0)
    control.stop()
    worker.await_workers(msecs=30_000)
    print(f"  training kept running: {rate:.2f} steps/s meanwhile")  # noqa: T201

    gen = finetune(model, samples, params, FinetuneControl())
    next(gen)
    naive = summary("fine-tuning on the GUI thread (naive)",
                    frame_times(viewer, max(10, args.frames // 3), step=lambda: next(gen)))
    gen.close()

    print(f"frame time, ours vs idle: {ours['median_ms'] / idle['median_ms']:.2f}x; "  # noqa: T201
          f"naive vs ours: {naive['median_ms'] / ours['median_ms']:.1f}x slower")
    viewer.close()


if __name__ == "__main__":
    main()
