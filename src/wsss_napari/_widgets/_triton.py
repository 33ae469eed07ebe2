"""Load triton safely in a process whose OpenGL runs on Mesa (llvmpipe, radeonsi, ...).

torch imports triton (``torch._dynamo`` does, and timm/torchvision import that) when it is
installed. triton's ``libtriton.so`` carries its own copy of LLVM and exports its symbols;
Mesa's OpenGL drivers link the system ``libLLVM``. When Mesa is loaded first (a napari
viewer exists: software rendering under Xvfb, a VM or a machine without a GPU driver),
the dynamic linker binds libtriton's own LLVM calls to Mesa's LLVM of another version and
the process segfaults on ``import triton``.

The fix touches only that case: libtriton is loaded once with ``RTLD_DEEPBIND`` (its own
symbols first), after which ``import triton`` reuses the loaded library and triton, torch
and ``torch.compile`` work for every plugin in the process. Nothing is done when triton is
absent, already imported, or when no foreign LLVM is loaded (NVIDIA's driver, macOS,
Windows, or torch imported before the viewer).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger(__name__)


def foreign_llvm_loaded() -> bool:
    """Whether a shared LLVM library (Mesa's ``libLLVM*.so``) is mapped into this process."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return False
    return any("/libLLVM" in line for line in maps.splitlines())


def triton_library() -> Path | None:
    """Path of the installed triton's ``libtriton.so`` (without importing triton), or None."""
    try:
        spec = importlib.util.find_spec("triton")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    lib = Path(next(iter(spec.submodule_search_locations))) / "_C" / "libtriton.so"
    return lib if lib.is_file() else None


def load_triton_isolated() -> bool:
    """Pre-load libtriton with its own LLVM symbols first when Mesa's LLVM is already loaded.

    Call before torch, timm or torchvision are first imported in a process that may already
    have an OpenGL context. Returns True when libtriton was pre-loaded, False when nothing
    needed doing. Leaves ``sys.modules`` untouched.
    """
    if not sys.platform.startswith("linux") or "triton" in sys.modules:
        return False
    lib = triton_library()
    if lib is None or not foreign_llvm_loaded():
        return False
    import ctypes

    deepbind = getattr(os, "RTLD_DEEPBIND", 0)
    if not deepbind:  # not glibc: nothing safe to do; say why a crash may follow
        log.warning("triton and Mesa's LLVM are both loaded and RTLD_DEEPBIND is missing; "
                    "importing torch may crash (uninstall triton if it does)")
        return False
    ctypes.CDLL(str(lib), mode=os.RTLD_NOW | os.RTLD_LOCAL | deepbind)
    log.debug("pre-loaded %s with RTLD_DEEPBIND (Mesa's LLVM is loaded)", lib)
    return True
