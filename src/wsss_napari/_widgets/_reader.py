"""napari side of the slide reader: clear notifications and closing stores on layer removal.

The core reader (:mod:`wsss_napari.io.reader`) raises a :class:`~wsss_napari.WsssError` for
a bad file. Raised from a reader, napari's File > Open turns it into a modal "choose another
reader" dialog that buries the message; here it becomes one error notification instead and
napari opens nothing (the ``[(None,)]`` "empty file" answer). Reading a slide also makes sure
the viewer closes a slide's file when its layer is removed, and offers once to make this the
reader for slide files (:mod:`._readerpref`: napari's built-in reader claims them too).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .. import WsssError


def napari_get_reader(path: str | list[str]) -> Callable[[Any], list] | None:
    """npe2 reader contribution: the core reader, wrapped for napari."""
    from ..io import reader as core

    if core.napari_get_reader(path) is None:
        return None
    return read_with_notifications


def read_with_notifications(path: str | list[str]) -> list:
    from ..io.reader import read_slides

    _watch_current_viewer()
    try:
        layers = read_slides(path)
    except WsssError as err:
        from napari.utils.notifications import show_error

        show_error(str(err))
        return [(None,)]
    from ._readerpref import offer_preference

    offer_preference(path if isinstance(path, str) else path[0])
    return layers


def _watch_current_viewer() -> None:
    import napari

    from ._layers import install_lifecycle

    viewer = napari.current_viewer()
    if viewer is not None:
        install_lifecycle(viewer)
