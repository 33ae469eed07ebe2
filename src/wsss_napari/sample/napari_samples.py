"""napari ``sample_data`` contributions: a real H&E crop, a synthetic H&E slide with its
ground truth, and scikit-image's IHC image.

Functions return layer-data tuples and import nothing from napari. The real sample is
``sample_data/CMU-1-crop.tif`` of the source checkout (see its README for source and
licence); the synthetic slide is a real pyramidal TIFF, written once into the user cache
folder. Both go through the same lazy reader as a scanner's file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import WsssError
from ..classes import LABEL_NAMES
from ..labels_encoding import ENCODING, layer_colors, to_layer

#: Size and seed of the sample slide (level 0 px; 0.5 um/px).
SAMPLE_SIZE = (4096, 4096)
SAMPLE_SEED = 7
SAMPLE_MPP = 0.5


#: The real H&E sample (a crop of OpenSlide's CMU-1-Small-Region.svs, 0.499 um/px).
REAL_SAMPLE = Path(__file__).resolve().parents[3] / "sample_data" / "CMU-1-crop.tif"


def real_slide_path() -> Path:
    """Path of the real H&E sample; only a source checkout has it (``sample_data/``)."""
    if not REAL_SAMPLE.is_file():
        raise WsssError(f"the real H&E sample is not installed ({REAL_SAMPLE} is missing): it "
                        "ships in the source checkout's sample_data/ folder, not in the wheel")
    return REAL_SAMPLE


def real_he_slide() -> list[tuple[Any, dict[str, Any], str]]:
    """Sample: real H&E, a 2560 x 1760 crop of OpenSlide's CMU-1 at 0.499 um/px."""
    from ..io.reader import slide_layer_data
    from ..io.slide import Slide

    return [slide_layer_data(Slide.open(real_slide_path()), name="CMU-1 crop (real H&E)")]


def cache_dir() -> Path:
    """Where sample slides are written (see :mod:`wsss_napari.cache`)."""
    from ..cache import cache_dir as _root

    return _root("samples")


def sample_slide_path(size: tuple[int, int] = SAMPLE_SIZE, seed: int = SAMPLE_SEED) -> Path:
    """Path of the synthetic sample slide, written on first use (a few seconds)."""
    from .synth import write_pyramidal_tiff

    path = cache_dir() / f"synthetic-he-{size[0]}x{size[1]}-seed{seed}.tif"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_pyramidal_tiff(path, size[0], size[1], seed=seed, mpp=SAMPLE_MPP)
    return path


def synthetic_slide() -> list[tuple[Any, dict[str, Any], str]]:
    """Sample: a 4096 x 4096 synthetic H&E slide (pyramidal TIFF) and its true tissue map."""
    from ..io.reader import slide_layer_data
    from ..io.slide import Slide
    from ..region import MaskGeometry
    from .synth import mask_region

    path = sample_slide_path()
    slide = Slide.open(path)
    image = slide_layer_data(slide, name="synthetic H&E")
    h, w = SAMPLE_SIZE
    ds = 4  # the ground truth at 2 um/px is plenty to compare with
    mask = mask_region(SAMPLE_SEED, h, w, 0, 0, h // ds, w // ds, ds=ds)
    scale = (SAMPLE_MPP * ds, SAMPLE_MPP * ds)
    truth = (
        to_layer(mask),
        {
            "name": "synthetic H&E: ground truth",
            "scale": scale,
            "units": ("um", "um"),
            "translate": ((ds - 1) * SAMPLE_MPP / 2,) * 2,
            "colormap": layer_colors(),
            "opacity": 0.5,
            "visible": False,
            "metadata": {"wsss": {"ground_truth": True, "classes": list(LABEL_NAMES),
                                  "label_encoding": ENCODING, "source": "synthetic H&E",
                                  "geometry": MaskGeometry(downsample=ds, mpp=SAMPLE_MPP,
                                                           slide=str(path))}},
        },
        "labels",
    )
    return [image, truth]


def immunohistochemistry() -> list[tuple[Any, dict[str, Any], str]]:
    """Sample: scikit-image's bundled immunohistochemistry image (a real IHC photo, 512^2)."""
    from skimage import data

    img = data.immunohistochemistry()
    return [(img, {"name": "immunohistochemistry (scikit-image)", "rgb": True,
                   "metadata": {"mpp": None, "mpp_source": "unknown"}}, "image")]
