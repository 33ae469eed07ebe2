"""The core never imports Qt or napari: the CLI, the API and headless servers depend on it."""

import ast
import subprocess
import sys
from pathlib import Path

import wsss_napari

PKG = Path(wsss_napari.__file__).parent
CORE = ["io", "models", "inference", "postproc", "train", "corrections", "sample"]
CORE_FILES = ["params.py", "progress.py", "device.py", "classes.py", "metrics.py", "tune.py",
              "report.py", "slide_job.py", "cohort.py"]
FORBIDDEN = ("napari", "qtpy", "PyQt6", "PyQt5", "PySide6", "PySide2", "magicgui", "superqt")


def _core_files():
    for name in CORE:
        yield from (PKG / name).rglob("*.py")
    for name in CORE_FILES:
        if (PKG / name).exists():
            yield PKG / name


def test_core_sources_never_import_gui_packages():
    offenders = []
    for path in _core_files():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [
                f"{path.relative_to(PKG)}:{node.lineno} imports {n}"
                for n in names
                if n.split(".")[0] in FORBIDDEN
            ]
    assert not offenders, "\n".join(offenders)


def test_importing_the_core_loads_no_gui():
    mods = [f"wsss_napari.{m}" for m in CORE] + [
        "wsss_napari.cli", "wsss_napari.cohort", "wsss_napari.slide_job",
        "wsss_napari.inference.slide_mask", "wsss_napari.train.versioned"]
    code = (
        "import sys, importlib\n"
        f"for m in {mods!r}: importlib.import_module(m)\n"
        f"bad = [m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
