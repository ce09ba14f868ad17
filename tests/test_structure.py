"""The package's import structure: no cycle between modules, and a domain that imports no web code.

The imports are read from the source with `ast`, not by importing anything: every `import` and `from … import`
of a module in `dispatcher/`, relative ones resolved, those inside functions included (an import put in a function
to dodge a cycle still makes one). Imports under `if TYPE_CHECKING:` are left out: they never run, and exist so
that an annotation can name a type of a higher layer (`Dispatcher` for the HTTP app key, say).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "dispatcher"
PACKAGE = PACKAGE_DIR.name

# Where a cycle touches these modules (or the packages they become), its failure message says whose area it is in.
AREAS = {
    f"{PACKAGE}.delivery": "the delivery stages (dispatcher/delivery/), not the HTTP layer",
    f"{PACKAGE}.senders": "the sender processes (dispatcher/senders/), not the HTTP layer",
}
# The web side: what the domain in dispatcher/contacts/ must not import.
WEB = (f"{PACKAGE}.http", "aiohttp", "multidict", "yarl")


@dataclass(frozen=True)
class Import:
    """One module importing another, at `path:line`."""

    source: str
    target: str
    path: Path
    line: int

    def __str__(self) -> str:
        return f"{self.source} → {self.target} ({self.path.relative_to(PACKAGE_DIR.parent)}:{self.line})"


def module_name(path: Path) -> str:
    """`dispatcher/http/server.py` → `dispatcher.http.server`; a package's `__init__.py` is the package."""
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, Path]:
    """Every module of the package by name."""
    return {module_name(path): path for path in sorted(PACKAGE_DIR.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    """`if TYPE_CHECKING:` or `if typing.TYPE_CHECKING:`."""
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements under `node`, at any depth (functions, classes, try blocks), but not the body of an
    `if TYPE_CHECKING:` (its `else` runs, so it is walked)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for statement in child.orelse:
                yield from _import_nodes(ast.Module(body=[statement], type_ignores=[]))
        else:
            yield from _import_nodes(child)


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> Iterator[Import]:
    """What module `name` (at `path`) imports, as full dotted names: modules of the package where the statement
    names one (`from . import server` → `dispatcher.http.server`), else what it names (`aiohttp`)."""
    is_package = path.name == "__init__.py"
    here = name if is_package else name.rpartition(".")[0]
    for node in _import_nodes(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(name, alias.name, path, node.lineno)
            continue
        if node.level:
            base_parts = here.split(".")
            base_parts = base_parts[: len(base_parts) - (node.level - 1)]
            base = ".".join([*base_parts, node.module] if node.module else base_parts)
        else:
            base = node.module or ""
        targets = {f"{base}.{alias.name}" for alias in node.names}
        for target in sorted({target if target in modules else base for target in targets}):
            yield Import(name, target, path, node.lineno)


def import_graph() -> dict[str, list[Import]]:
    """For each module of the package, its imports of other modules of the package."""
    modules = package_modules()
    graph: dict[str, list[Import]] = {}
    for name, path in modules.items():
        edges = [edge for edge in imports_of(name, path, modules) if edge.target in modules and edge.target != name]
        graph[name] = edges
    return graph


def cycles(graph: dict[str, list[Import]]) -> list[tuple[set[str], list[Import]]]:
    """Each group of modules that import one another (Tarjan's strongly connected components of more than one
    module), with one cycle through it as its imports in order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for edge in graph[node]:
            if edge.target not in index:
                visit(edge.target)
                low[node] = min(low[node], low[edge.target])
            elif edge.target in on_stack:
                low[node] = min(low[node], index[edge.target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [(component, _cycle_in(component, graph)) for component in components]


def _cycle_in(component: set[str], graph: dict[str, list[Import]]) -> list[Import]:
    """A shortest cycle through the first module (by name) of a strongly connected `component`."""
    start = min(component)
    paths: dict[str, list[Import]] = {start: []}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for edge in graph[node]:
                if edge.target == start:
                    return [*paths[node], edge]
                if edge.target in component and edge.target not in paths:
                    paths[edge.target] = [*paths[node], edge]
                    following.append(edge.target)
        frontier = following
    raise AssertionError(f"no cycle through {start} in {sorted(component)}")  # a component always has one


def describe(component: set[str], cycle: list[Import]) -> str:
    """A group of modules importing one another, whose area it lies in when it touches one of `AREAS`, and one of
    its cycles as import lines."""
    areas = sorted(
        {
            area
            for module in component
            for prefix, area in AREAS.items()
            if module == prefix or module.startswith(prefix + ".")
        }
    )
    where = f", in {'; '.join(areas)}" if areas else ""
    modules = [edge.source for edge in cycle]
    return (
        f"{', '.join(sorted(component))} import one another{where}; for one:\n"
        f"  {' → '.join([*modules, modules[0]])}\n" + "\n".join(f"    {edge}" for edge in cycle)
    )


def test_the_walker_sees_relative_and_function_level_imports(tmp_path: Path) -> None:
    """The graph resolves `from . import x`, `from ..y import z` and imports inside functions, and leaves out
    `if TYPE_CHECKING:` blocks, so the cycle test below reads what it claims to."""
    graph = import_graph()
    targets = {name: {edge.target for edge in edges} for name, edges in graph.items()}
    assert f"{PACKAGE}.http.server" in targets[f"{PACKAGE}.app"]
    assert f"{PACKAGE}.untrusted_json" in targets[f"{PACKAGE}.http.server"]
    source = tmp_path / "sample.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "from . import b\n"
        "if TYPE_CHECKING:\n"
        "    from .c import C\n"
        "def f():\n"
        "    from .d import e\n"
    )
    modules = {f"{PACKAGE}.x.{name}": source for name in "abcd"}
    found = {edge.target for edge in imports_of(f"{PACKAGE}.x.a", source, modules)}
    assert found == {"typing", f"{PACKAGE}.x.b", f"{PACKAGE}.x.d"}


def test_no_import_cycle_between_modules() -> None:
    """No module of dispatcher/ imports, directly or through others, a module that imports it back."""
    found = cycles(import_graph())
    if found:
        pytest.fail("import cycles:\n" + "\n".join(describe(*group) for group in found), pytrace=False)


def test_contacts_import_no_web_code() -> None:
    """The contacts domain (dispatcher/contacts/) imports nothing of dispatcher/http/ nor aiohttp and its parts:
    the web dialects live in dispatcher/http/ and call the domain, never the other way round."""
    modules = package_modules()
    web = [
        str(edge)
        for name, path in modules.items()
        if name == f"{PACKAGE}.contacts" or name.startswith(f"{PACKAGE}.contacts.")
        for edge in imports_of(name, path, modules)
        if edge.target in WEB or edge.target.startswith(tuple(f"{prefix}." for prefix in WEB))
    ]
    if web:
        pytest.fail("dispatcher/contacts/ imports web code:\n" + "\n".join(web), pytrace=False)
