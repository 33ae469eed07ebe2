"""Which reader napari uses for slides: the user's reader preference, set with consent.

napari's built-in reader (and imageio behind it) also claims ``*.svs``, ``*.tif`` and
``*.tiff``. Nothing in an npe2 manifest can give a plugin priority: when two readers match
a file and the user has no preference, napari's File > Open and drag and drop show a "choose
a reader" dialog, ``viewer.open(path)`` raises ``MultipleReaderError``, and
``npe2.read([path])`` without a plugin name takes whichever reader comes first. The only
lever is napari's per-pattern preference ``settings.plugins.extension2reader`` (Preferences >
Plugins, or the dialog's "Remember this choice"), which is the user's to set.

So when a slide is opened with this plugin's reader and its pattern has no preference yet,
:func:`offer_preference` shows one notification with an action button; only pressing it
writes the preference (:func:`prefer_wsss`), and a choice the user made for another plugin
is never overwritten.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from fnmatch import fnmatch

PLUGIN = "wsss-napari"
#: Slide patterns of this plugin's reader that napari's built-in reader also claims.
SLIDE_PATTERNS = ("*.svs", "*.tif", "*.tiff")
#: Patterns offered already in this process (one notification per pattern per session).
_OFFERED: set[str] = set()


def pattern_of(path: str | os.PathLike) -> str | None:
    """The slide pattern (``*.svs``, ``*.tif``, ``*.tiff``) that ``path`` matches, if any."""
    name = os.fspath(path).lower()
    return next((p for p in SLIDE_PATTERNS if fnmatch(name, p)), None)


def preferred_reader(pattern: str) -> str | None:
    """The reader plugin the user prefers for ``pattern`` (napari settings), or None."""
    from napari.settings import get_settings

    return get_settings().plugins.extension2reader.get(pattern)


def prefer_wsss(patterns: Iterable[str] = SLIDE_PATTERNS) -> list[str]:
    """Make this plugin napari's reader for ``patterns`` that have no preference yet.

    Returns the patterns set. A preference for another plugin is left as the user chose it.
    """
    from napari.settings import get_settings

    settings = get_settings().plugins
    current = dict(settings.extension2reader)
    new = [p for p in patterns if p not in current]
    if new:
        settings.extension2reader = {**current, **dict.fromkeys(new, PLUGIN)}
    return new


def offer_preference(path: str | os.PathLike) -> bool:
    """After this plugin read ``path``: offer (once) to make it the reader for its pattern.

    Returns True when a notification was shown.
    """
    pattern = pattern_of(path)
    if pattern is None or pattern in _OFFERED or preferred_reader(pattern) is not None:
        return False
    _OFFERED.add(pattern)
    from napari.utils.notifications import Notification, NotificationSeverity, notification_manager

    todo = [p for p in SLIDE_PATTERNS if preferred_reader(p) is None]
    label = ", ".join(todo)
    notification_manager.dispatch(Notification(
        f"napari has two readers for {pattern} files and asks which to use each time. "
        f"Open {label} files with wsss-napari from now on? (Preferences > Plugins changes it)",
        severity=NotificationSeverity.INFO,
        actions=[(f"Always use wsss-napari for {label}", lambda *_: prefer_wsss(todo))],
    ))
    return True
