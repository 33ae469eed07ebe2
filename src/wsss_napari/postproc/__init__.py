"""CAM -> pseudo-mask post-processing: pure functions on numpy arrays, and a live tuner.

See ``docs/postprocessing.md`` for every rule, its parameters and measured speed.
"""

from .pipeline import Cancelled, LiveTuner, postprocess, warm_up

__all__ = ["Cancelled", "LiveTuner", "postprocess", "warm_up"]
