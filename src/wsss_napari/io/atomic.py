"""Atomic file writes: write to a temporary file beside the target, then rename.

A crash, a full disk or a cancelled job never leaves a half-written output behind, and an
existing file is replaced only once the new one is complete.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .. import WsssError


def check_writable_dir(directory: str | os.PathLike) -> Path:
    """Create ``directory`` if needed and check it can be written; raise a clear error if not."""
    d = Path(directory)
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise WsssError(f"cannot create output folder '{d}': {err.strerror or err}") from err
    if not os.access(d, os.W_OK | os.X_OK):
        raise WsssError(f"output folder '{d}' is not writable")
    return d


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` on success.

    On any exception the temporary file is removed and ``target`` is left untouched.
    The temporary name keeps ``target``'s suffix (writers that infer the format from it work).
    """
    target = Path(target)
    check_writable_dir(target.parent if str(target.parent) else ".")
    sfx = suffix if suffix is not None else "".join(target.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".part{sfx}", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes 0600 files; give the result the permissions a plain open() would.
        os.chmod(tmp_path, 0o666 & ~_current_umask())
        os.replace(tmp_path, target)
    except OSError as err:
        _unlink_quietly(tmp_path)
        raise WsssError(f"could not write '{target}': {err.strerror or err}") from err
    except BaseException:
        _unlink_quietly(tmp_path)
        raise


def atomic_write_bytes(target: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    return Path(target)


def atomic_write_text(target: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``target`` atomically."""
    return atomic_write_bytes(target, text.encode("utf-8"))


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _unlink_quietly(p: Path) -> None:
    with contextlib.suppress(OSError):
        p.unlink()
