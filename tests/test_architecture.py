"""The core never imports Qt or napari: the CLI, the API and headless servers depend on it."""

import ast
import subprocess
import sys
from pathlib import Path

import wsss_napari

PKG = Path(wsss_napari.__file__).parent
CORE = ["io", "models", "inference", "postproc", "train", "corrections", "sample", "params"]
CORE_FILES = ["progress.py", "device.py", "classes.py", "metrics.py", "tune.py",
              "report.py", "slide_job.py", "cohort.py", "layer_record.py",
              "labels_encoding.py", "region.py"]
FORBIDDEN = ("napari", "qtpy", "PyQt6", "PyQt5", "PySide6", "PySide2", "magicgui", "superqt")


def _core_files():
    for name in CORE:
        assert (PKG / name / "__init__.py").exists(), f"core package {name} is gone: update CORE"
        yield from (PKG / name).rglob("*.py")
    for name in CORE_FILES:
        assert (PKG / name).exists(), f"core module {name} is gone: update CORE_FILES"
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


def _sibling_imports(pkg: Path) -> dict[str, set[str]]:
    """module -> the modules of ``pkg`` it imports (relative imports, anywhere in the file)."""
    graph: dict[str, set[str]] = {}
    for path in pkg.glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                names = [node.module] if node.module else [a.name for a in node.names]
                deps.update(n.split(".")[0] for n in names)
        graph[path.stem] = {d for d in deps if (pkg / f"{d}.py").exists()}
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str]:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node: str, path: list[str]) -> list[str]:
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [node, dep] if dep in path else [node, dep]
            if dep not in state and (cycle := visit(dep, [*path, node])):
                return cycle
        state[node] = 2
        return []

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [])):
            return cycle
    return []


def test_find_cycle_finds_one():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) == []


def test_models_have_no_import_cycle():
    """Also counts the builders that models.registry imports by name (models.families)."""
    from wsss_napari.models.families import FAMILIES

    graph = _sibling_imports(PKG / "models")
    graph["registry"] |= {f.module for f in FAMILIES}
    assert {"cam", "gradcam", "seg"} <= graph["registry"]
    assert _find_cycle(graph) == [], " -> ".join(_find_cycle(graph))
