"""wsss-napari: weakly-supervised semantic segmentation of whole-slide images in napari.

The package root stays light: heavy modules (torch, napari) are imported where used.
"""

__version__ = "0.1.0"


class WsssWarning(UserWarning):
    """Warnings raised by wsss-napari itself (tests turn them into errors)."""


class WsssError(Exception):
    """An error whose message is meant for the user, as-is (CLI and napari notifications)."""


__all__ = ["__version__", "WsssWarning", "WsssError"]
