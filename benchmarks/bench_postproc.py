"""Post-processing speed: the fast chain (cold and LiveTuner incremental) vs the reference.

The baseline is ``wsss_napari.postproc.reference`` — the same rules written plainly with
scikit-image / scipy (np.argmax over a power-computed background channel, remove_small_*,
a Python loop over sub-patches, measure.label + regionprops, a KD-tree over every large-region
pixel for kNN) — measured in the same run on the same maps.

    python benchmarks/bench_postproc.py [--sizes 1024 4096] [--repeat 3]

CAMs: 3 smooth class maps (a coarse random grid upsampled like a stride-16 network output,
plus a little noise); an RGB image with glass patches for the grey-level glass detection.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time

import numpy as np


def make_inputs(n: int, seed: int = 0):
    import cv2

    rng = np.random.default_rng(seed)
    coarse = rng.random((3, n // 16, n // 16)).astype(np.float32)
    cams = np.stack([cv2.resize(c, (n, n), interpolation=cv2.INTER_CUBIC) for c in coarse])
    cams = np.clip(cams**2 + rng.normal(0, 0.01, cams.shape).astype(np.float32), 0, 1)
    glass_field = cv2.resize(rng.random((n // 128, n // 128)).astype(np.float32), (n, n),
                             interpolation=cv2.INTER_CUBIC)
    img = np.empty((n, n, 3), np.uint8)
    img[:] = (180, 120, 190)
    img += rng.integers(0, 30, (n, n, 1), dtype=np.uint8)
    img[glass_field > 0.75] = (240, 240, 240)
    return cams, img, np.array([0.9, 0.8, 0.6])


def timed(fn, repeat: int) -> tuple[float, object]:
    """Median wall ms (and the CPU ms of this process, all threads, in ``CPU_MS``)."""
    times, cpu, out = [], [], None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    CPU_MS.append(statistics.median(cpu) * 1000)
    return statistics.median(times) * 1000, out


#: CPU ms of the last timed() calls: on a loaded machine the wall time includes waiting
#: for a core, the CPU time does not.
CPU_MS: list[float] = []


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--skip-reference-above", type=int, default=8192)
    args = ap.parse_args()

    import cv2

    from wsss_napari.params import PostprocParams
    from wsss_napari.postproc import LiveTuner, postprocess, warm_up
    from wsss_napari.postproc.reference import reference_postprocess

    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"cores: {os.cpu_count()}  cv2 threads: {cv2.getNumThreads()}  "  # noqa: T201
          f"load: {os.getloadavg()[0]:.1f}\nuptime: {uptime}")
    t0 = time.perf_counter()
    warm_up(background=False)  # numba's compiled loops: compiled once, then loaded from disk
    print(f"compiled loops ready in {time.perf_counter() - t0:.2f} s "  # noqa: T201
          "(once per process; the tuning widget does it when it opens)")
    p = PostprocParams()
    for n in args.sizes:
        cams, img, scores = make_inputs(n)

        def cold_chain(cams=cams, img=img, scores=scores):
            return postprocess(cams, p, image=img, scores=scores)

        cold, fast = timed(cold_chain, args.repeat)
        rows = [("cold full chain (postprocess)", cold, CPU_MS[-1])]
        tuner = LiveTuner(cams, image=img, scores=scores)
        tuner.run(p)
        sliders = [("bg_exponent", [4.0, 16.0, 8.0]), ("min_area_pct", [2.0, 10.0, 5.0]),
                   ("min_region", [50, 800, 200]), ("knn_k", [4, 16, 8]),
                   ("white_threshold", [200.0, 220.0, 210.0]),
                   ("island_max_size", [500, 4000, 2000])]
        for name, values in sliders:
            ts, cs = [], []
            for v in values:
                t, _ = timed(lambda v=v, name=name, tuner=tuner: tuner.run(p.replace(**{name: v})),
                             1)
                ts.append(t)
                cs.append(CPU_MS[-1])
            rows.append((f"LiveTuner: {name} slider", statistics.median(ts), statistics.median(cs)))
        if n > 1024:
            ts, cs = [], []
            for y in (4.0, 16.0, 8.0):
                t, _ = timed(lambda y=y, tuner=tuner: tuner.preview(p.replace(bg_exponent=y), 1024),
                             1)
                ts.append(t)
                cs.append(CPU_MS[-1])
            rows.append(("LiveTuner.preview(max_size=1024): bg_exponent", statistics.median(ts),
                         statistics.median(cs)))
        if n <= args.skip_reference_above:
            ref_ms, ref = timed(lambda cams=cams, img=img, scores=scores: reference_postprocess(
                cams, p, image=img, scores=scores), 1)
            agree = float((ref == fast).mean())
        else:
            ref_ms, agree = float("nan"), float("nan")
        print(f"\n{n} x {n}  (3 classes + background; "  # noqa: T201
              f"reference: {ref_ms:.0f} ms, agreement with fast {100 * agree:.3f} %)")
        print(f"{'path':<48}{'ms':>9}{'CPU ms':>9}{'x faster than reference':>26}")  # noqa: T201
        for name, ms, cpu_ms in rows:
            print(f"{name:<48}{ms:>9.1f}{cpu_ms:>9.1f}{ref_ms / ms:>26.1f}")  # noqa: T201
    end = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"\nuptime at the end: {end}")  # noqa: T201


if __name__ == "__main__":
    main()
