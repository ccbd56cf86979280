"""The core's layers: every import between pycorefile's modules goes down, and none is circular.

Each module of ``pycorefile/`` (a subpackage, ``corefile`` or ``capture``,
counts as one) has a layer in ``LAYERS``, lowest first. A module may import
only modules of lower layers: never one of its own layer, never one above.
That holds for every import, the ones run at import time, the ones under
``if TYPE_CHECKING:`` and the ones inside a function, because an import
hidden from the interpreter is still a dependency for the reader. No module
may take part in an import cycle either, subpackages' modules included.

``LAYERS`` is the table in docs/architecture.md ("Layers"); a test keeps the
two equal.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "pycorefile"
ARCHITECTURE = ROOT / "docs" / "architecture.md"

LAYERS: tuple[tuple[str, ...], ...] = (
    ("_version", "metrics", "corefile", "capture", "changes", "files", "re2", "kube"),
    ("_wire", "_zones"),
    ("_types", "wire", "zones", "response"),
    ("_request", "http"),
    ("_contract",),
    ("plugin", "rename"),
    ("_chain", "_registry"),
    ("_config",),
    ("_dispatch",),
    ("_conn",),
    ("_tcp", "_http"),
    ("_server",),
    ("_app",),
    ("_workers", "__init__"),
    ("cli", "testing"),
    ("__main__",),
)
"""pycorefile's modules by layer, lowest first (``__init__`` is the package itself)."""

RUNTIME = "at import time"
TYPE_CHECKING = "under TYPE_CHECKING"
IN_FUNCTION = "inside a function"


@dataclass(frozen=True)
class Import:
    """One module importing another of the package."""

    source: str
    """The importing module, dotted (``pycorefile._request``)."""
    target: str
    """The imported module, dotted (a package's name stands for its ``__init__``)."""
    line: int
    kind: str
    file: str = ""
    """The importing module's path from the repository's root (for messages)."""

    def where(self) -> str:
        file = self.file or self.source.replace(".", "/") + ".py"
        return f"{file}:{self.line} ({self.kind})"


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the package by dotted name (``pycorefile.corefile`` for its __init__)."""
    out = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports_of(
    source: str, module: str, is_package: bool, known: set[str], file: str = ""
) -> list[Import]:
    """The package's modules that ``source`` (the text of ``module``) imports, of all three kinds.

    ``known`` is every module's dotted name: ``from . import _wire`` imports the
    module ``_wire``, ``from . import parse_corefile`` the package itself. One
    Import per imported module and statement.
    """
    package = module if is_package else module.rpartition(".")[0]
    found: dict[tuple[str, int], Import] = {}

    def add(target: str, line: int, kind: str) -> None:
        found.setdefault((target, line), Import(module, target, line, kind, file))

    def target_of(name: str) -> str:
        while name not in known and "." in name:
            name = name.rpartition(".")[0]
        return name

    def visit(node: ast.AST, kind: str) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
                    add(target_of(alias.name), node.lineno, kind)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                if node.module:
                    base = f"{base}.{node.module}"
            else:
                base = node.module or ""
            if base == PACKAGE or base.startswith(PACKAGE + "."):
                for alias in node.names:
                    submodule = f"{base}.{alias.name}"
                    target = submodule if submodule in known else target_of(base)
                    add(target, node.lineno, kind)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            for child in ast.iter_child_nodes(node):
                visit(child, IN_FUNCTION if kind == RUNTIME else kind)
            return
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            visit(node.test, kind)
            for child in node.body:
                visit(child, TYPE_CHECKING if kind == RUNTIME else kind)
            for child in node.orelse:
                visit(child, kind)
            return
        for child in ast.iter_child_nodes(node):
            visit(child, kind)

    visit(ast.parse(source), RUNTIME)
    return list(found.values())


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def all_imports(root: Path = ROOT) -> list[Import]:
    files = module_files(root)
    known = set(files)
    out: list[Import] = []
    for module, path in files.items():
        is_package = path.name == "__init__.py"
        text = path.read_text(encoding="utf-8")
        out += imports_of(text, module, is_package, known, str(path.relative_to(root)))
    return out


def unit(module: str) -> str:
    """The name ``LAYERS`` knows a module by: its first part below the package."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def layer_of() -> dict[str, int]:
    return {name: index for index, layer in enumerate(LAYERS) for name in layer}


def layer_violations(imports: list[Import], layers: dict[str, int]) -> list[str]:
    """One line per import that does not go down the layers."""
    problems = []
    for imp in imports:
        importer, imported = unit(imp.source), unit(imp.target)
        if importer == imported:
            continue  # inside one module or one subpackage
        have, want = layers[importer], layers[imported]
        if want >= have:
            relation = "the same layer as" if want == have else "a layer above"
            problems.append(
                f"{imp.where()}: {imp.source} (layer {have + 1}) imports {imp.target}, "
                f"{relation} it (layer {want + 1})"
            )
    return problems


def import_cycles(imports: list[Import]) -> list[list[Import]]:
    """One cycle of imports (the shortest from its first module) per group of modules
    that import one another."""
    graph: dict[str, list[Import]] = {}
    for imp in imports:
        if imp.source != imp.target:
            graph.setdefault(imp.source, []).append(imp)
            graph.setdefault(imp.target, [])
    # Tarjan's strongly connected components, iteratively.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    groups: list[set[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, 0)]
        while work:
            node, edge = work.pop()
            if edge == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            edges = graph[node]
            if edge < len(edges):
                work.append((node, edge + 1))
                nxt = edges[edge].target
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if low[node] == index[node]:
                group = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.add(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(group)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return [_shortest_cycle(min(group), group, graph) for group in groups]


def _shortest_cycle(start: str, group: set[str], graph: dict[str, list[Import]]) -> list[Import]:
    """The fewest imports leading from ``start`` back to it, within ``group``."""
    came_by: dict[str, Import] = {}
    frontier = [start]
    while frontier:
        following = []
        for module in frontier:
            for imp in graph[module]:
                if imp.target not in group or imp.target in came_by:
                    continue
                came_by[imp.target] = imp
                if imp.target == start:
                    path = [imp]
                    while path[0].source != start:
                        path.insert(0, came_by[path[0].source])
                    return path
                following.append(imp.target)
        frontier = following
    raise AssertionError(f"no cycle through {start}")  # a group always has one


# -- The checks -----------------------------------------------------------------------


def test_every_module_has_one_layer() -> None:
    listed = [name for layer in LAYERS for name in layer]
    assert len(listed) == len(set(listed)), "a module is listed twice in LAYERS"
    present = {unit(module) for module in module_files()}
    assert present - set(listed) == set(), "modules with no layer: add them to LAYERS"
    assert set(listed) - present == set(), "LAYERS names modules that do not exist"


def test_every_import_goes_down_the_layers() -> None:
    problems = layer_violations(all_imports(), layer_of())
    assert not problems, "imports that do not go down the layers:\n" + "\n".join(problems)


def test_no_import_cycle() -> None:
    cycles = import_cycles(all_imports())
    report = [
        "an import cycle:\n"
        + "\n".join(f"  {imp.where()}: {imp.source} imports {imp.target}" for imp in cycle)
        for cycle in cycles
    ]
    assert not cycles, "\n".join(report)


def test_the_layers_are_the_documented_ones() -> None:
    text = ARCHITECTURE.read_text(encoding="utf-8")
    section = text.split("\n## Layers\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (\d+) \| ([^|]*) \|", section, re.MULTILINE)
    documented = tuple(tuple(re.findall(r"`([\w.]+)`", names)) for _, names in rows)
    assert [int(number) for number, _ in rows] == list(range(1, len(rows) + 1))
    assert documented == LAYERS, "docs/architecture.md's Layers table differs from LAYERS"


# -- The checker itself ---------------------------------------------------------------

SAMPLE = """\
from __future__ import annotations
from typing import TYPE_CHECKING
import dns.message
from . import _wire
from ._contract import settle
import pycorefile._http
if TYPE_CHECKING:
    from ._config import BlockRoute
else:
    from .corefile._model import Token
def late() -> None:
    from .plugin import Plugin
class Later:
    async def method(self) -> None:
        if TYPE_CHECKING:
            from pycorefile import _server
"""


def test_the_checker_finds_every_kind_of_import() -> None:
    known = {
        "pycorefile", "pycorefile._wire", "pycorefile._contract", "pycorefile._http",
        "pycorefile._config", "pycorefile.corefile", "pycorefile.corefile._model",
        "pycorefile.plugin", "pycorefile._server", "pycorefile._request",
    }  # fmt: skip
    found = imports_of(SAMPLE, "pycorefile._request", False, known)
    assert [(imp.target, imp.line, imp.kind) for imp in found] == [
        ("pycorefile._wire", 4, RUNTIME),
        ("pycorefile._contract", 5, RUNTIME),
        ("pycorefile._http", 6, RUNTIME),
        ("pycorefile._config", 8, TYPE_CHECKING),
        ("pycorefile.corefile._model", 10, RUNTIME),
        ("pycorefile.plugin", 12, IN_FUNCTION),
        ("pycorefile._server", 16, IN_FUNCTION),
    ]


def test_the_checker_names_an_import_that_goes_up_or_sideways() -> None:
    layers = {"_wire": 0, "_zones": 0, "_request": 1, "_config": 2}
    imports = [
        Import("pycorefile._request", "pycorefile._wire", 3, RUNTIME),
        Import("pycorefile._request", "pycorefile._config", 8, TYPE_CHECKING),
        Import("pycorefile._wire", "pycorefile._zones", 12, IN_FUNCTION),
    ]
    assert layer_violations(imports, layers) == [
        "pycorefile/_request.py:8 (under TYPE_CHECKING): pycorefile._request (layer 2) "
        "imports pycorefile._config, a layer above it (layer 3)",
        "pycorefile/_wire.py:12 (inside a function): pycorefile._wire (layer 1) "
        "imports pycorefile._zones, the same layer as it (layer 1)",
    ]


def test_the_checker_finds_a_cycle_through_a_function_level_import() -> None:
    a_b = Import("pycorefile.a", "pycorefile.b", 1, RUNTIME)
    b_c = Import("pycorefile.b", "pycorefile.c", 2, TYPE_CHECKING)
    c_a = Import("pycorefile.c", "pycorefile.a", 3, IN_FUNCTION)
    c_d = Import("pycorefile.c", "pycorefile.d", 4, RUNTIME)
    assert import_cycles([a_b, b_c, c_d]) == []
    assert import_cycles([a_b, b_c, c_a, c_d]) == [[a_b, b_c, c_a]]
