"""Cohort throughput on dask: slides per minute with 1 and 2 local process workers.

The same generated cohort (N pyramidal slides, 0.5 um/px) runs through
:func:`wsss_napari.cohort.run_cohort` on a ``LocalCluster`` built by
:func:`~wsss_napari.cohort.start_local_cluster` (what ``wsss-napari batch`` starts), each
time with an empty CAM cache and output folder, so every slide is computed. Cluster start-up
is excluded (workers are warmed with one import of torch first); the time is from submitting
the slides to the last row of ``cohort.csv``. Peak memory per worker is the resident-set
high-water mark of each worker process (``ru_maxrss``). Prints slides/min and the 2-worker /
1-worker ratio. Tile tasks (one big slide split over workers) are not implemented: a slide
is one task.

Usage: python benchmarks/bench_cohort.py [N_SLIDES] [SIZE] [MODEL]
(default 6 slides of 2048 x 2048 px, the shipped default model, CAM scales 1, tile 512)
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path


def _warm() -> None:
    import torch  # noqa: F401 - the import is the warm-up

    import wsss_napari.slide_job  # noqa: F401


def _maxrss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(slides: list[str], workers: int, tmp: Path, model: str) -> tuple[float, list[float]]:
    import os

    from distributed import Client

    from wsss_napari.cohort import run_cohort, start_local_cluster
    from wsss_napari.params import CamParams
    from wsss_napari.progress import run_to_end
    from wsss_napari.slide_job import SlideSpec

    os.environ["WSSS_CACHE_DIR"] = str(tmp / f"cache{workers}")  # inherited by the workers
    cluster, threads = start_local_cluster(len(slides), workers, dashboard_address=":0")
    try:
        with Client(cluster) as client:
            client.run(_warm)
            spec = SlideSpec(model=model, cam=CamParams(scales=(1.0,), tile_size=512,
                                                        halo=32, device="cpu"),
                             torch_threads=threads)
            t = time.perf_counter()
            rows = run_to_end(run_cohort(slides, tmp / f"out{workers}", spec,
                                         scheduler=cluster.scheduler_address))
            dt = time.perf_counter() - t
            assert all(r["status"] == "done" for r in rows), rows
            rss = list(client.run(_maxrss_mib).values())
    finally:
        cluster.close()
    return dt, rss


def main(n: int = 6, size: int = 2048, model: str = "default") -> None:
    from wsss_napari.sample.synth import write_pyramidal_tiff

    tmp = Path(tempfile.mkdtemp(prefix="bench-cohort-"))
    slides = [str(write_pyramidal_tiff(tmp / f"s{i}.tif", size, size, seed=i, mpp=0.5))
              for i in range(n)]
    print(f"{n} slides of {size} x {size} px at 0.5 um/px, model {model}")  # noqa: T201
    res = {}
    for workers in (1, 2):
        dt, rss = run(slides, workers, tmp, model)
        res[workers] = dt
        print(f"{workers} worker(s): {dt:6.1f} s  {n / dt * 60:6.2f} slides/min  "  # noqa: T201
              f"peak RSS per worker {', '.join(f'{r:.0f}' for r in rss)} MiB")
    print(f"2 workers / 1 worker: throughput x{res[1] / res[2]:.2f}")  # noqa: T201


if __name__ == "__main__":
    args = sys.argv[1:]
    main(int(args[0]) if args else 6, int(args[1]) if len(args) > 1 else 2048,
         args[2] if len(args) > 2 else "default")
