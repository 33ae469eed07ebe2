"""Shared fixtures. GUI tests use napari's ``make_napari_viewer`` (run under Xvfb: ./dev test)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_API", "pyqt6")

# timm imports triton (via torchvision and torch._dynamo); loaded after Mesa's LLVM (a napari
# viewer's OpenGL under Xvfb) it segfaults unless pre-loaded as _widgets._triton does. Core
# tests call torch directly, so it is loaded here, before any test can open a viewer, whatever
# subset of files runs; tests/_widgets/test_triton.py checks the other order in a subprocess.
import timm  # noqa: E402, F401

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("WSSS_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; tests that use it skip cleanly when it is absent."""
    d = SHARED / "data"
    if not d.is_dir():
        pytest.skip(f"shared data not found at {d} (only in the development checkout)")
    return d


@pytest.fixture(scope="session")
def wsss4luad_val(shared_data: Path) -> Path:
    d = shared_data / "wsss4luad" / "validation"
    if not (d / "img").is_dir():
        pytest.skip(f"WSSS4LUAD validation data not found at {d}")
    return d


@pytest.fixture(scope="session")
def shared_slides(shared_data: Path) -> Path:
    d = shared_data / "slides"
    if not d.is_dir():
        pytest.skip(f"shared slides not found at {d}")
    return d


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
