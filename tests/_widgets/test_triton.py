"""torch's triton and Mesa's OpenGL in one process, without a global side effect.

Each check runs in a fresh interpreter: this test process imported torch before any viewer
(see conftest), so the order that crashes cannot happen in it.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.gui

SCRIPT = textwrap.dedent("""
    import sys
    import napari

    viewer = napari.Viewer(show=False)
    for name in ("CAM", "Pseudo-mask tuning", "Review and fine-tune", "Export"):
        viewer.window.add_plugin_dock_widget("wsss-napari", name)
    assert sys.modules.get("triton", "absent") == "absent", "the widgets touched triton"

    from wsss_napari._widgets._worker import preload_torch

    preload_torch()
    import torch

    assert float(torch.ones(3).sum()) == 3.0
    {after}
    viewer.add_image(__import__("numpy").ones((8, 8)))
    viewer.screenshot(canvas_only=True)
    viewer.close()
    print("ok")
""")


def test_torch_after_a_viewer_leaves_triton_alone():
    """Crashed (segfault) before the fix; then blocked triton with sys.modules['triton'] = None."""
    check = "assert sys.modules.get('triton', 'absent') is not None"
    if importlib.util.find_spec("triton") is not None:
        # triton stays a real, working module: torch.compile and other plugins can use it
        check += ("; import triton.language; from torch.utils._triton import has_triton_package"
                  "; assert has_triton_package()")
    res = subprocess.run([sys.executable, "-c", SCRIPT.format(after=check)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip().endswith("ok")
