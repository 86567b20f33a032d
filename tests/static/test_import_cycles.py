"""No import cycles among the modules of a package: a module that imports another, directly or
through others, must not be imported back by it. A cycle makes import order matter, hides which
module is the lower one, and makes neither understandable alone.

Every import in the source counts, wherever it is written: at the top, under `if TYPE_CHECKING`
(types are a dependency too) and inside functions (a deferred import is still a dependency, only
hidden). Imports are read from the AST of each file, so nothing is imported to check them.
`from pkg import name` depends on module pkg.name when there is one, on pkg otherwise; modules
outside the package checked are not followed (each directory below is checked on its own, as the
installed package it becomes: common/ is squall.common, services/x is squall.services.x)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def module_files(directory: Path, package: str) -> dict[str, Path]:
    """Module name (as installed) -> source file, for every .py file under `directory`."""
    modules = {}
    for path in sorted(directory.rglob("*.py")):
        parts = [package, *path.relative_to(directory).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def imported_modules(module: str, path: Path, known: set[str]) -> set[str]:
    """The modules of `known` that `module` (whose source is `path`) imports anywhere in its code."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, up level - 1 packages
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            found.update(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names)
    return (found & known) - {module}


def import_graph(directory: Path, package: str) -> dict[str, set[str]]:
    files = module_files(directory, package)
    return {module: imported_modules(module, path, set(files)) for module, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm): each is a
    set of modules that all reach each other through imports."""
    index: dict[str, int] = {}
    lowest: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = lowest[module] = len(index)
        stack.append(module)
        for imported in sorted(graph[module]):
            if imported not in index:
                visit(imported)
                lowest[module] = min(lowest[module], lowest[imported])
            elif imported in stack:
                lowest[module] = min(lowest[module], index[imported])
        if lowest[module] == index[module]:
            component = []
            while (member := stack.pop()) != module:
                component.append(member)
            if component:
                found.append(sorted([module, *component]))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def describe(graph: dict[str, set[str]], component: list[str]) -> str:
    return "\n".join(f"  {m} imports {', '.join(sorted(graph[m] & set(component)))}" for m in component)


def test_a_cycle_is_found_wherever_its_imports_are_written(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "low.py").write_text("import os\n")
    (package / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.b import B\n")
    (package / "b.py").write_text("def f():\n    from pkg import a\n")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "c.py").write_text("from .. import low\nfrom . import d\n")
    (package / "sub" / "d.py").write_text("from .c import name\n")
    graph = import_graph(package, "pkg")
    assert graph["pkg.sub.c"] == {"pkg.low", "pkg.sub.d"} and graph["pkg.low"] == set()
    assert cycles(graph) == [["pkg.a", "pkg.b"], ["pkg.sub.c", "pkg.sub.d"]]


PACKAGES = [
    pytest.param("squall", "squall", id="squall"),
    pytest.param("common", "squall.common", id="common"),
    *(pytest.param(f"services/{name}", f"squall.services.{name}", id=f"services/{name}") for name in ("scheduler", "executor", "shuffle_meta")),
]


@pytest.mark.parametrize(("directory", "package"), PACKAGES)
def test_no_import_cycles(directory: str, package: str) -> None:
    graph = import_graph(ROOT / directory, package)
    found = cycles(graph)
    assert not found, f"import cycles in {directory}/:\n" + "\n".join(describe(graph, c) for c in found)
