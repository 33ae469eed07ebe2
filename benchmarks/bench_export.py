"""Export of a large mask held in zarr: tiled OME-TIFF pyramid vs the naive whole-array write.

Naive baseline: ``np.asarray(zarr)`` then ``tifffile.imwrite`` of every pyramid level built in
memory. Prints wall time and peak Python memory (tracemalloc) of both and their ratios.
Usage: python benchmarks/bench_export.py [SIZE]   (default 8192: a 64 MiB mask)
"""

from __future__ import annotations

import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np


def main(size: int = 8192) -> None:
    import tifffile
    import zarr

    from wsss_napari.io.export import export_ome_tiff
    from wsss_napari.region import MaskGeometry

    tmp = Path(tempfile.mkdtemp())
    z = zarr.create_array(str(tmp / "mask.zarr"), shape=(size, size), chunks=(512, 512),
                          dtype="uint8", fill_value=255)
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 4, (size // 256, size // 256), dtype=np.uint8)
    for y in range(0, size, 2048):  # blocky labels, written in strips
        z[y:y + 2048] = np.kron(blocks[y // 256:(y + 2048) // 256], np.ones((256, 256), np.uint8))

    def naive() -> None:
        a = np.asarray(z[...])
        with tifffile.TiffWriter(tmp / "naive.ome.tif", bigtiff=True, ome=True) as tw:
            levels = [a]
            while max(levels[-1].shape) > 512:
                levels.append(levels[-1][::2, ::2].copy())
            tw.write(levels[0], tile=(512, 512), compression="zlib", subifds=len(levels) - 1)
            for lv in levels[1:]:
                tw.write(lv, tile=(512, 512), compression="zlib", subfiletype=1)

    def tiled() -> None:
        export_ome_tiff(z, tmp / "tiled.ome.tif", geometry=MaskGeometry(mpp=0.5))

    res = {}
    for name, fn in (("naive", naive), ("tiled", tiled)):
        tracemalloc.start()
        t = time.perf_counter()
        fn()
        dt = time.perf_counter() - t
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        res[name] = (dt, peak)
        print(f"{name:6s} {dt:6.2f} s  peak {peak / 2**20:7.1f} MiB")  # noqa: T201
    print(f"tiled/naive: time x{res['tiled'][0] / res['naive'][0]:.2f}, "  # noqa: T201
          f"peak memory x{res['tiled'][1] / res['naive'][1]:.3f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 8192)
