"""Parameter objects shared by the CLI, the Python API, the widgets and saved metadata.

Each is a frozen dataclass: defaults live on the fields (never written twice), ``__post_init__``
validates, ``to_dict``/``from_dict`` round-trip through JSON/YAML, and field names are the
names used everywhere (CLI flags use the same names with dashes). Each field's ``metadata``
holds a ``help`` text and, for numbers, a documented ``range`` that the widgets use for
their sliders, and, for strings with a fixed set of values, ``choices`` (validated here,
the CLI's ``choices``, a combo box in the widgets).

One module per concept, every public name re-exported here (import from
``wsss_napari.params``, not from the modules): ``base`` (``ParamsBase``, field metadata,
validation, file loading), ``maps`` (CAMs, post-processing, cells), ``train`` (classifier,
segmenter, fine-tuning), ``output`` (uncertainty and review queue, export, ``RunRecord``).
A parameter file's keys are checked against every class, so all modules are imported here.
"""

from .base import ParamsBase
from .maps import CamParams, CellParams, PostprocParams, WhiteMethod
from .output import (
    ExportFormat,
    ExportParams,
    GeoJsonGroup,
    QueueMode,
    QueueScore,
    RunRecord,
    UncertaintyMetric,
    UncertaintyParams,
)
from .train import FinetuneParams, TrainClsParams, TrainSegParams

__all__ = [
    "CamParams",
    "CellParams",
    "ExportFormat",
    "ExportParams",
    "FinetuneParams",
    "GeoJsonGroup",
    "ParamsBase",
    "PostprocParams",
    "QueueMode",
    "QueueScore",
    "RunRecord",
    "TrainClsParams",
    "TrainSegParams",
    "UncertaintyMetric",
    "UncertaintyParams",
    "WhiteMethod",
]
