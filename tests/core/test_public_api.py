"""Plugins use only the public API: no private module of the core, none of another plugin.

The built-in plugins (``plugins/``) and the examples (``examples/``) are what
third parties copy, so they may import only what a third party may: the
public modules of ``pycorefile`` (no ``pycorefile._x``, nor a private module
of a public package such as ``pycorefile.corefile._model``) and another
plugin's package itself (``pycorefile_plugins.health``), never its private
modules (``pycorefile_plugins.cache._store``). A plugin's own private modules
are its own. Every import counts, wherever it is written (under
``TYPE_CHECKING``, inside a function). Run by ``.ci/check``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHECKED = ("plugins", "examples")
BUILT_INS = "pycorefile_plugins"


def _private(parts: list[str]) -> bool:
    return any(part.startswith("_") and not part.startswith("__") for part in parts)


def _absolute(module: str | None, level: int, package: list[str]) -> list[str]:
    """The dotted parts a (possibly relative) ``from`` import names."""
    parts = module.split(".") if module else []
    if level == 0:
        return parts
    base = package[: len(package) - (level - 1)] if level > 1 else package
    return [*base, *parts]


def _package_of(path: Path, root: Path) -> list[str]:
    """The import name of the package a file is in (``pycorefile_plugins.cache``), or []
    for a file outside the built-in plugins (examples: relative imports stay in the example)."""
    relative = path.relative_to(root).parts
    if relative[0] == "plugins" and len(relative) > 2:
        return [BUILT_INS, *relative[1:-1]]
    return []


def violations(source: str, path: Path, root: Path = ROOT) -> list[str]:
    """``file:line: what`` for every import of ``source`` that reaches a private module."""
    file = path.relative_to(root).as_posix()
    package = _package_of(path, root)
    own = package[:2]  # pycorefile_plugins.NAME: this plugin's own package
    found = []
    for node in ast.walk(ast.parse(source, file)):
        if isinstance(node, ast.Import):
            targets = [alias.name.split(".") for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level and not package:
                continue  # an example's own modules
            base = _absolute(node.module, node.level, package)
            # ``from pycorefile import _wire`` names a module, ``from x import _name`` a
            # private name: either way the last part's underscore says private.
            targets = [[*base, alias.name] for alias in node.names]
        else:
            continue
        for parts in targets:
            problem = _problem(parts, own)
            if problem:
                found.append(f"{file}:{node.lineno}: {problem} ({'.'.join(parts)})")
    return found


def _problem(parts: list[str], own: list[str]) -> str:
    if parts[0] == "pycorefile" and _private(parts[1:]):
        return "a private module of the core"
    if parts[0] == BUILT_INS and _private(parts[1:2]):
        return "a private module of the built-in plugins' package"
    if parts[0] == BUILT_INS and _private(parts[2:]) and parts[:2] != own:
        return "a private module of another plugin"
    return ""


def checked_files(root: Path = ROOT) -> list[Path]:
    return sorted(
        path
        for top in CHECKED
        for path in (root / top).rglob("*.py")
        if ".venv" not in path.parts and "build" not in path.parts
    )


def test_plugins_and_examples_import_only_public_modules() -> None:
    problems = [
        line
        for path in checked_files()
        for line in violations(path.read_text(encoding="utf-8"), path)
    ]
    assert not problems, "\n".join(problems)


def test_the_check_sees_plugins_and_examples() -> None:
    names = {path.relative_to(ROOT).as_posix() for path in checked_files()}
    assert "plugins/forward/_plugin.py" in names
    assert "examples/rename/pycorefile_rename/plugin.py" in names


CASES = [
    # (file, source, problems found)
    ("plugins/cache/_plugin.py", "from pycorefile._wire import skip_name", ["core"]),
    ("plugins/cache/_plugin.py", "import pycorefile._app", ["core"]),
    ("plugins/cache/_plugin.py", "from pycorefile import _wire, then", ["core"]),
    ("plugins/cache/_plugin.py", "from pycorefile.corefile._model import Directive", ["core"]),
    (
        "plugins/cache/_plugin.py",
        "if TYPE_CHECKING:\n    from pycorefile._types import Route",
        ["core"],
    ),
    ("plugins/cache/_plugin.py", "def f():\n    from pycorefile import _chain", ["core"]),
    ("plugins/ready/_plugin.py", "from pycorefile_plugins.health._plugin import X", ["another"]),
    ("plugins/ready/_plugin.py", "from pycorefile_plugins.health import _plugin", ["another"]),
    ("plugins/ready/_plugin.py", "from .._health import X", ["package"]),
    ("plugins/ready/_plugin.py", "from ..health._plugin import X", ["another"]),
    ("examples/x/x/plugin.py", "from pycorefile_plugins.cache._store import Shelf", ["another"]),
    # allowed
    ("plugins/ready/_plugin.py", "from pycorefile_plugins.health import STOPPING_KEY", []),
    ("plugins/ready/_plugin.py", "from ._parse import parse_ready", []),
    ("plugins/cache/_plugin.py", "from pycorefile_plugins.cache._store import Shelf", []),
    ("plugins/cache/_plugin.py", "from __future__ import annotations", []),
    ("plugins/cache/_plugin.py", "from pycorefile.wire import PreparedReply", []),
    ("examples/x/x/plugin.py", "from .rules import Rule", []),
]


@pytest.mark.parametrize(("file", "source", "expected"), CASES)
def test_the_check_names_each_private_import(file: str, source: str, expected: list[str]) -> None:
    found = violations(source, ROOT / file)
    assert len(found) == len(expected), found
    for line, kind in zip(found, expected, strict=True):
        assert line.startswith(f"{file}:")
        assert kind in line
