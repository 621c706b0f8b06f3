"""harness/__init__.py's module map is true: each module imports only modules above it.

Every import counts, at module level and inside functions alike: an import moved into a
function to dodge a circle still makes one, so the map forbids both.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import harness

HARNESS = Path(harness.__file__).parent
MAP_ENTRY = re.compile(r"^- ``([\w.]+)``", re.MULTILINE)


def _layers() -> list[str]:
    """The map's modules, top first, as dotted names under ``harness``."""
    return [f"harness.{name}" for name in MAP_ENTRY.findall(harness.__doc__ or "")]


def _modules(package: Path = HARNESS) -> dict[str, Path]:
    """Every module of ``package`` but its ``__init__`` (harness's: the map itself), by dotted name."""
    out = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts != (package.name,):
            out[".".join(parts)] = path
    return out


def _imported(module: str, path: Path, known: set[str]) -> set[str]:
    """The harness modules ``module`` imports anywhere in its source (relative imports resolved;
    ``from pkg import name`` counts ``pkg.name`` when that is a module)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            submodules = {f"{source}.{alias.name}" for alias in node.names} & known
            # ``from pkg import mod, mod2``: the modules; the package itself only for a name it defines
            # (a module of a package runs after the package's __init__ has begun, whatever it imports).
            found.update(submodules)
            if len(submodules) < len(node.names):
                found.add(source)
    return {name for name in found if name in known and name != module}


def _circle(graph: dict[str, set[str]]) -> list[str]:
    """One import circle (``[a, b, a]``: a imports b imports a), or [] when there is none."""
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str]:
        if module in path:
            return path[path.index(module):] + [module]
        if module in done:
            return []
        for target in sorted(graph[module]):
            found = visit(target, path + [module])
            if found:
                return found
        done.add(module)
        return []

    for module in sorted(graph):
        found = visit(module, [])
        if found:
            return found
    return []


@pytest.mark.parametrize("package", ["harness", "impl", "tools"])
def test_no_import_circles(package):
    """Whatever the map's order: a circle breaks every order (and lazy imports only hide it).
    impl/ and tools/ have no map, but a circle there is as much a knot."""
    modules = _modules(HARNESS.parent / package)
    graph = {module: _imported(module, path, set(modules)) for module, path in modules.items()}
    circle = _circle(graph)
    assert not circle, "import circle: " + " -> ".join(circle)


def test_every_module_is_on_the_map():
    layers = _layers()
    assert len(set(layers)) == len(layers), "a module is listed twice"
    missing = sorted(set(_modules()) - set(layers))
    stale = sorted(set(layers) - set(_modules()))
    assert not missing and not stale, f"not on the map in harness/__init__.py: {missing}; on it but gone: {stale}"


def test_each_module_imports_only_modules_above_it():
    layers = _layers()
    modules = _modules()
    known = set(modules)
    wrong = []
    for module, path in modules.items():
        rank = layers.index(module) if module in layers else -1
        for target in sorted(_imported(module, path, known)):
            if target not in layers or layers.index(target) >= rank:
                wrong.append(f"{module} imports {target}")
    assert not wrong, "imports against the map in harness/__init__.py (each module imports only modules above it):\n  " + "\n  ".join(wrong)


def test_the_core_imports_only_torch_and_the_standard_library():
    """harness/core/ is what every repro script carries: besides its own modules (above it on the
    map) it may import torch and the standard library, nothing else, anywhere in a module."""
    import sys

    allowed = set(sys.stdlib_module_names) | {"torch"}
    wrong = []
    for module, path in _modules(HARNESS / "core").items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level > 1:
                names = [f"{'.' * node.level}{node.module or ''}"]  # out of the core, into the harness
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue  # ``from .x import``: a module of the core (the map holds their order)
            wrong += [f"harness.{module} imports {name}" for name in names if name.split(".")[0] not in allowed]
    assert not wrong, "the core imports more than torch and the standard library:\n  " + "\n  ".join(wrong)
