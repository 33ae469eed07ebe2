"""Open a 40,000 x 40,000 slide in napari: first frame, jump to full resolution, peak memory.

Compared, in the same run and on the same file, with the naive baseline of reading the
slide with ``tifffile.imread`` (what a generic image reader does: decode level 0 whole).

    python benchmarks/bench_open.py [--size 40000] [--seed 0] [--baseline-cap-gb 8]

Each measurement runs in a fresh subprocess (peak RSS is per process). The napari run needs a
display; without one it re-runs itself under ``xvfb-run``. The slide is generated once into
``benchmarks/_work/`` (also timed: the generator streams tiles in bounded memory).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / "_work"
XVFB = ["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24 +extension GLX +render -noreset"]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def child_generate(path: str, size: int, seed: int) -> dict:
    from wsss_napari.sample.synth import write_pyramidal_tiff

    t0 = time.perf_counter()
    write_pyramidal_tiff(path, size, size, seed=seed, mpp=0.5)
    return {"seconds": time.perf_counter() - t0, "peak_rss_mb": peak_rss_mb(),
            "file_mb": os.path.getsize(path) / 2**20}


def child_napari(path: str, seed: int) -> dict:
    import napari
    import numpy as np
    from napari.plugins import _initialize_plugins
    from qtpy.QtWidgets import QApplication

    _initialize_plugins()
    viewer = napari.Viewer(show=True)
    QApplication.processEvents()
    rss_viewer = peak_rss_mb()

    def frame():
        QApplication.processEvents()
        return viewer.screenshot(canvas_only=True, flash=False)

    t0 = time.perf_counter()
    [layer] = viewer.open(path, plugin="wsss-napari")
    t_open = time.perf_counter() - t0
    shot = frame()
    while shot[..., :3].std() < 5 and time.perf_counter() - t0 < 60:  # until tissue is drawn
        shot = frame()
    t_first = time.perf_counter() - t0

    # jump to a random full-resolution region: 1 screen px = 1 level-0 px
    rng = np.random.default_rng(seed)
    h, w = layer.data[0].shape[:2]
    mpp = float(layer.scale[-1])
    cy, cx = (int(v) for v in rng.integers(2000, (h - 2000, w - 2000)))
    t1 = time.perf_counter()
    viewer.camera.center = (cy * mpp, cx * mpp)
    viewer.camera.zoom = 1.0 / mpp
    frame()
    while layer.data_level != 0 and time.perf_counter() - t1 < 60:
        frame()
    frame()  # the frame drawn with the level-0 tiles
    t_jump = time.perf_counter() - t1
    jump_level = int(layer.data_level)
    shot_full = frame()
    out_png = WORK / "bench_open_fullres.png"
    from PIL import Image

    Image.fromarray(shot_full[..., :3]).save(out_png)
    Image.fromarray(shot[..., :3]).save(WORK / "bench_open_first.png")
    # warm: the same slide opened again in this napari session (napari's one-time set-up done)
    from wsss_napari.io.slide import close_layer_slide

    viewer.layers.remove(layer)
    close_layer_slide(layer.metadata)
    viewer.reset_view()
    frame()
    t2 = time.perf_counter()
    [layer] = viewer.open(path, plugin="wsss-napari")
    shot2 = frame()
    while shot2[..., :3].std() < 5 and time.perf_counter() - t2 < 60:
        shot2 = frame()
    t_warm = time.perf_counter() - t2
    result = {
        "open_s": t_open, "first_frame_s": t_first, "jump_s": t_jump, "warm_first_frame_s": t_warm,
        "levels": len(layer.data), "data_level_after_jump": jump_level,
        "peak_rss_mb": peak_rss_mb(), "rss_after_viewer_mb": rss_viewer,
        "jump_to_px": [cy, cx],
    }
    viewer.close()
    return result


def child_napari_tiny() -> dict:
    """napari's own one-time cost of a first image layer (pint units, scipy), any data."""
    import napari
    import numpy as np
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=True)
    QApplication.processEvents()
    t0 = time.perf_counter()
    viewer.add_image(np.full((64, 64, 3), 200, np.uint8), rgb=True)
    QApplication.processEvents()
    viewer.screenshot(canvas_only=True, flash=False)
    res = {"first_layer_s": time.perf_counter() - t0}
    viewer.close()
    return res


def child_imread(path: str, cap_gb: float) -> dict:
    import tifffile

    if cap_gb > 0:  # protect a shared machine: fail like a smaller computer would
        cap = int(cap_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    t0 = time.perf_counter()
    try:
        arr = tifffile.imread(path)
        shape, error = list(arr.shape), None
        del arr
    except MemoryError as err:
        shape = None
        error = f"MemoryError ({err or 'allocation refused'}) under a {cap_gb:g} GB cap"
    return {"seconds": time.perf_counter() - t0, "peak_rss_mb": peak_rss_mb(), "shape": shape,
            "error": error}


def run_child(args: list[str], display: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--child", *args]
    if display and not os.environ.get("DISPLAY"):
        if not shutil.which("xvfb-run"):
            raise SystemExit("no display and no xvfb-run: install xvfb (./dev setup)")
        cmd = XVFB + cmd
    env = {**os.environ, "QT_API": os.environ.get("QT_API", "pyqt6"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    for line in proc.stdout.splitlines()[::-1]:
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise SystemExit(f"child {args[0]} failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=40000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--baseline-cap-gb", type=float, default=8.0,
                    help="address-space cap for the imread baseline (0 = none)")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args()

    if a.child:
        kind, *rest = a.child
        res = {"generate": lambda: child_generate(rest[0], int(rest[1]), int(rest[2])),
               "napari": lambda: child_napari(rest[0], int(rest[1])),
               "napari_tiny": child_napari_tiny,
               "imread": lambda: child_imread(rest[0], float(rest[1]))}[kind]()
        print("RESULT " + json.dumps(res))  # noqa: T201
        return

    WORK.mkdir(exist_ok=True)
    path = WORK / f"synthetic-{a.size}-seed{a.seed}.tif"
    gen = None
    if not path.exists():
        gen = run_child(["generate", str(path), str(a.size), str(a.seed)])
    ours = run_child(["napari", str(path), str(a.seed)], display=True)
    tiny = run_child(["napari_tiny"], display=True)
    base = run_child(["imread", str(path), str(a.baseline_cap_gb)])

    p = print  # noqa: T201 - this is a report
    p(f"\nslide: {path.name}  {a.size} x {a.size} px, {ours['levels']} levels, "
      f"{path.stat().st_size / 2**20:.0f} MB on disk")
    if gen:
        p(f"generated in {gen['seconds']:.1f} s, peak RSS {gen['peak_rss_mb']:.0f} MB (one core)")
    p("")
    p(f"{'':34}{'wsss-napari':>14}{'tifffile.imread':>18}{'ratio':>9}")
    base_t = base["seconds"]
    p(f"{'open -> first frame (s)':34}{ours['first_frame_s']:>14.2f}{base_t:>18.2f}"
      f"{base_t / ours['first_frame_s']:>8.0f}x")
    p(f"{'  of which viewer.open (s)':34}{ours['open_s']:>14.2f}")
    p(f"{'  napari first-layer set-up (s)':34}{tiny['first_layer_s']:>14.2f}"
      "   (a 64x64 array, any plugin)")
    p(f"{'open again -> first frame (s)':34}{ours['warm_first_frame_s']:>14.2f}{base_t:>18.2f}"
      f"{base_t / ours['warm_first_frame_s']:>8.0f}x")
    p(f"{'jump to full-res region (s)':34}{ours['jump_s']:>14.2f}{'(same array)':>18}")
    p(f"{'peak RSS (MB)':34}{ours['peak_rss_mb']:>14.0f}{base['peak_rss_mb']:>18.0f}"
      f"{base['peak_rss_mb'] / ours['peak_rss_mb']:>8.1f}x")
    p(f"{'  napari + Qt before opening (MB)':34}{ours['rss_after_viewer_mb']:>14.0f}")
    if base["error"]:
        p(f"baseline: {base['error']} after {base_t:.1f} s")
    own = ours["first_frame_s"] - tiny["first_layer_s"]
    p(f"targets: first frame < 2 s -> cold {'met' if ours['first_frame_s'] < 2 else 'MISSED'}"
      f" ({own:.2f} s without napari's set-up), warm "
      f"{'met' if ours['warm_first_frame_s'] < 2 else 'MISSED'}; "
      f"peak RSS < 1 GB -> {'met' if ours['peak_rss_mb'] < 1024 else 'MISSED'}; "
      f"level after jump: {ours['data_level_after_jump']}")
    record = {"generate": gen, "ours": ours, "napari_tiny": tiny, "imread": base}
    (WORK / "bench_open.json").write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
