"""Make ``sample_data/CMU-1-crop.tif``, the real H&E slide that the demo and napari's
File > Open Sample show, from the OpenSlide test slide ``CMU-1-Small-Region.svs``.

A crop of the tissue-rich part of level 0 (no resampling), written as a tiled pyramidal JPEG
TIFF (levels 1, 1/2, 1/4, 256 px tiles) whose resolution tags carry the source's MPP::

    .venv/bin/python scripts/make_sample_data.py ../shared/data/slides/CMU-1-Small-Region.svs
"""

from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The crop, level-0 px of CMU-1-Small-Region.svs (y, x, height, width).
CROP = (400, 448, 2560, 1760)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("svs", type=Path, help="CMU-1-Small-Region.svs")
    ap.add_argument("--out", type=Path, default=ROOT / "sample_data" / "CMU-1-crop.tif")
    ap.add_argument("--quality", type=int, default=85)
    args = ap.parse_args()

    from wsss_napari.io.slide import Slide
    from wsss_napari.progress import run_to_end

    y, x, h, w = CROP
    with Slide.open(args.svs) as src:
        if src.mpp is None or src.mpp_source != "aperio":
            raise SystemExit(f"{args.svs}: expected an Aperio slide with its MPP")
        crop = src.read_region(0, y, x, h, w)
        mpp = src.mpp
    slide = Slide.from_arrays(crop, mpp=mpp, name="CMU-1 crop")
    run_to_end(slide.build_pyramid_cache(args.out, tile=256, quality=args.quality))
    print(f"{args.out}: {h} x {w} px at {mpp} um/px, {args.out.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
