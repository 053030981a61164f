"""The package's shape: modules and functions of a readable size, imports that only run
downwards through the stage layers, and no import cycles."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "scalselect"
MAX_MODULE_LINES = 800
MAX_FUNCTION_LINES = 60  # from the `def` line to the last line, docstring included

# Bottom to top: a module may import from its own layer and the layers below it. The
# name is the first component under `scalselect` (a top-level module or a stage folder);
# "" is the package's own __init__.
LAYERS = (
    ("", "errors", "locations", "io", "progress"),
    ("settings", "budgets", "methods"),
    ("config",),  # the configuration's checks: they read settings and budgets
    ("data",),
    ("extract",),
    ("score",),
    ("select",),
    ("report",),
    ("workflow",),  # what the rules run, from the configuration
    ("watch",),  # where a run stands, read from the workflow's files (status)
    ("demo",),  # the bundled demo and tiny models: fixtures, which may use any stage
    ("cli", "launch", "__main__"),
)
LAYER_OF = {name: level for level, names in enumerate(LAYERS) for name in names}


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imported(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that module ``name`` imports anywhere in its file: at module
    level, in functions and under ``TYPE_CHECKING``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from scalselect.extract import features` imports a module; `from
            # scalselect.extract.store import sample_key` a name of one.
            for alias in node.names:
                child = f"{base}.{alias.name}"
                targets.add(child if child in known else base)
    return {t for t in targets if t in known and t != name}


def layer(name: str) -> int:
    parts = name.split(".")
    return LAYER_OF[parts[1] if len(parts) > 1 else ""]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_module_has_a_layer() -> None:
    unplaced = sorted({n.split(".")[1] for n in modules() if "." in n} - set(LAYER_OF))
    assert not unplaced, f"place these in LAYERS (tests/test_layout.py): {unplaced}"


def test_imports_only_run_downwards() -> None:
    known = modules()
    upward = [
        f"{name} (layer {layer(name)}) imports {target} (layer {layer(target)})"
        for name, path in known.items()
        for target in sorted(imported(name, path, known))
        if layer(target) > layer(name)
    ]
    assert not upward, "imports that go up a layer:\n" + "\n".join(upward)


def test_no_import_cycles() -> None:
    known = modules()
    graph = {name: imported(name, path, known) for name, path in known.items()}
    found = cycles(graph)
    assert not found, "modules that import each other (directly or not):\n" + "\n".join(
        " <-> ".join(component) for component in found
    )


def test_modules_and_functions_stay_readable() -> None:
    too_long = []
    for path in modules().values():
        relative = path.relative_to(REPO).as_posix()
        text = path.read_text(encoding="utf-8")
        if len(text.splitlines()) > MAX_MODULE_LINES:
            too_long.append(f"{relative}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            lines = node.end_lineno - node.lineno + 1
            if lines > MAX_FUNCTION_LINES:
                too_long.append(f"{relative}:{node.lineno} {node.name}: {lines} lines")
    assert not too_long, (
        f"over {MAX_MODULE_LINES} lines a module or {MAX_FUNCTION_LINES} a function:\n"
        + "\n".join(too_long)
    )


def test_the_checks_see_what_they_check() -> None:
    # The import parser on what the package holds, so the checks above cannot pass by
    # seeing nothing.
    known = modules()
    assert imported("scalselect.extract.shard", known["scalselect.extract.shard"], known) >= {
        "scalselect.extract.features",  # from scalselect.extract import features
        "scalselect.extract.store",  # from scalselect.extract.store import (...)
        "scalselect.settings",
    }
    # Function-level imports count.
    assert "scalselect.demo.tinymodels" in imported(
        "scalselect.demo.build", known["scalselect.demo.build"], known
    )
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert layer("scalselect.errors") < layer("scalselect.data.records") < layer("scalselect.cli")


def test_the_architecture_page_lists_every_module_and_only_modules() -> None:
    """docs/architecture.md names every module of the package by its path (the command
    modules as `scalselect/cli/<command>.py`), and every path it names exists."""
    import re

    page = (REPO / "docs/architecture.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`(scalselect/[\w/]+\.py)`", page))
    package = {path.relative_to(REPO).as_posix() for path in modules().values()}
    commands = {p for p in package if p.startswith("scalselect/cli/") and p != "scalselect/cli/__init__.py"}
    folders = {p for p in package if p.endswith("/__init__.py") and p != "scalselect/cli/__init__.py"}
    assert "`scalselect/cli/<command>.py`" in page
    assert sorted(package - commands - folders - named) == []
    assert sorted(named - package) == []
