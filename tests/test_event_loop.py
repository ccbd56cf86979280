"""Nothing blocks the event loop: a static check over pycorefile/ and plugins/.

Every ``async def`` body, and every synchronous method the server or the
metrics endpoint calls on the event loop (``LOOP_METHODS``), is searched for
calls that block the thread: file I/O, fsync, file locks, subprocesses,
sleeps, name resolution, whole-file JSON/YAML loads. A call counts as
blocking when it is one of ``BLOCKING`` itself, or when it calls (directly or
through other functions of the project) a function of the project that makes
one. Functions of the project are matched by name, so a method call
``x.load()`` is taken to mean every project function called ``load``: the
check errs on the side of reporting.

A blocking call that is acceptable carries ``# blocking-ok: REASON`` on its
line (the reason is required). Work moved to a thread is never reported:
``trio.to_thread.run_sync(f, ...)`` passes ``f`` without calling it.

What this check cannot see: calls through variables or callbacks it cannot
name (``encoder(registry)``), blocking calls in third-party libraries other
than those listed, sockets left in blocking mode, and CPU-bound loops. It
keeps the known ways of blocking from coming back; it is not a proof.
"""

from __future__ import annotations

import ast
import io
import logging
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

# src/ holds the packages under their import names (links to pycorefile/ and plugins/).
ROOT = Path(__file__).resolve().parents[1] / "src"
PACKAGES = ("pycorefile", "pycorefile_plugins")

BLOCKING = {
    "open": "opens a file",
    "io.open": "opens a file",
    "os.open": "opens a file",
    "os.read": "reads a file",
    "os.write": "writes a file",
    "os.fsync": "waits for the disk",
    "os.fdatasync": "waits for the disk",
    "os.sync": "waits for the disk",
    "fcntl.flock": "waits for a file lock",
    "fcntl.lockf": "waits for a file lock",
    "time.sleep": "sleeps the thread",
    "subprocess.run": "waits for a child process",
    "subprocess.call": "waits for a child process",
    "subprocess.check_call": "waits for a child process",
    "subprocess.check_output": "waits for a child process",
    "subprocess.Popen": "starts a child process",
    "socket.getaddrinfo": "resolves a name",
    "socket.gethostbyname": "resolves a name",
    "socket.gethostbyname_ex": "resolves a name",
    "socket.gethostbyaddr": "resolves an address",
    "socket.getnameinfo": "resolves an address",
    "socket.create_connection": "connects a blocking socket",
    "json.load": "reads and parses a file",
    "yaml.safe_load": "parses YAML",
    "yaml.load": "parses YAML",
    "pickle.load": "reads a file",
}
"""Calls (as imported names resolve) that block the calling thread."""
BLOCKING_METHODS = {
    "read_text": "reads a file",
    "read_bytes": "reads a file",
    "write_text": "writes a file",
    "write_bytes": "writes a file",
    "communicate": "waits for a child process",
}
"""Method names that block whatever the object (``Path``, ``Popen``)."""
LOOP_METHODS = (
    "handle",
    "serve_known",
    "observe",
    "observe_known",
    "metrics",
    "collect",
)
"""Synchronous methods the server (or the metrics endpoint) calls on the event loop."""
KNOWN_BLOCKING = {
    ("pycorefile._app", "load_config"): "parses the Corefile (lark, or a child process)",
}
"""Project functions that block through a call this check cannot follow (a parameter)."""
_COMMON_TYPES = (
    dict, list, set, str, bytes, bytearray, int, float, object,
    io.BufferedWriter, io.TextIOWrapper, socket.socket, logging.Logger, threading.Event, Path,
)  # fmt: skip
COMMON_METHODS = frozenset(name for kind in _COMMON_TYPES for name in dir(kind)) | {
    "run", "start", "stop", "wait", "close", "send", "cancel", "started",
}  # fmt: skip
"""Method names too common to stand for the one project function of that name."""
ALLOW = re.compile(r"#\s*blocking-ok:\s*\S")


Target = tuple[str, str]
"""A function of the project: (module, qualified name), e.g. ``("pycorefile.x", "f")``."""


@dataclass
class Function:
    """One function or method of the project, and the calls in its own body."""

    module: str
    qualname: str
    node: ast.FunctionDef | ast.AsyncFunctionDef
    path: Path
    calls: list[ast.Call] = field(default_factory=list)
    """Not counting calls inside functions, lambdas or classes defined in it."""

    @property
    def name(self) -> str:
        return self.qualname.rsplit(".", 1)[-1]

    @property
    def owner(self) -> str | None:
        """The class a method belongs to."""
        return self.qualname.rsplit(".", 1)[0] if "." in self.qualname else None


@dataclass
class Module:
    name: str
    path: Path
    imports: dict[str, str] = field(default_factory=dict)
    """Local name → the dotted name it stands for (``fsync`` → ``os.fsync``)."""
    classes: dict[str, list[str]] = field(default_factory=dict)
    """Class → the names of its bases."""


def own_calls(func: ast.AST) -> Iterator[ast.Call]:
    stack = list(ast.iter_child_nodes(func))
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Call):
            yield node
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
            stack.extend(ast.iter_child_nodes(node))


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def read_module(path: Path, root: Path, functions: dict[Target, Function]) -> Module:
    name = module_name(path, root)
    module = Module(name, path)
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                local = alias.asname or alias.name.split(".")[0]
                module.imports[local] = alias.name if alias.asname else local
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                module.imports[alias.asname or alias.name] = f"{base}.{alias.name}"

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                module.classes[prefix + child.name] = [ast.unparse(b) for b in child.bases]
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                qualname = prefix + child.name
                functions[(name, qualname)] = Function(
                    name, qualname, child, path, list(own_calls(child))
                )
                visit(child, f"{qualname}.")
            else:
                visit(child, prefix)

    visit(tree, "")
    return module


class Checker:
    """Which calls on the event loop block, and through which functions of the project."""

    def __init__(self, root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> None:
        self.root = root
        self.packages = packages
        self.functions: dict[Target, Function] = {}
        self.modules: dict[str, Module] = {}
        for package in packages:
            for path in sorted((root / package).rglob("*.py")):
                module = read_module(path, root, self.functions)
                self.modules[module.name] = module
        self.lines = {m.path: m.path.read_text().splitlines() for m in self.modules.values()}
        self._why: dict[Target, str | None] = {}
        by_name: dict[str, list[Target]] = {}
        for target, f in self.functions.items():
            if f.owner is not None:
                by_name.setdefault(f.name, []).append(target)
        self.unique_methods = {
            name: targets[0]
            for name, targets in by_name.items()
            if len(targets) == 1 and name not in COMMON_METHODS and not name.startswith("__")
        }
        """Methods defined once in the project, by name: ``x.reread()`` can only mean it."""

    # -- Resolving a call to what it runs ----------------------------------------------

    def _lookup(self, dotted: str, hops: int = 0) -> Target | str:
        """A project function or class for a dotted name, else the name itself (external)."""
        module, _, attr = dotted.rpartition(".")
        found = self.modules.get(module)
        if found is None or hops > 5:
            return dotted
        if (module, attr) in self.functions or attr in found.classes:
            return (module, attr)
        if attr in found.imports:  # re-exported by a package's __init__
            return self._lookup(found.imports[attr], hops + 1)
        return dotted

    def _class_init(self, module: str, cls: str) -> list[Target]:
        """What ``Cls(...)`` runs: its ``__init__`` and ``__post_init__``, or its bases'."""
        out = []
        for method in ("__init__", "__post_init__"):
            if (module, f"{cls}.{method}") in self.functions:
                out.append((module, f"{cls}.{method}"))
        return out

    def _method(self, module: str, cls: str, name: str, depth: int = 0) -> Target | None:
        """``name`` of class ``cls``, or of one of its bases in the project."""
        if (module, f"{cls}.{name}") in self.functions:
            return (module, f"{cls}.{name}")
        if depth > 5:
            return None
        for base in self.modules[module].classes.get(cls, []):
            target = self._resolve_name(module, base)
            if isinstance(target, tuple):
                found = self._method(target[0], target[1], name, depth + 1)
                if found is not None:
                    return found
        return None

    def _resolve_name(self, module: str, name: str) -> Target | str:
        """A bare or dotted name as written in ``module``."""
        head, _, rest = name.partition(".")
        mod = self.modules[module]
        if not rest and ((module, head) in self.functions or head in mod.classes):
            return (module, head)
        if rest and "." not in rest:  # Class.method
            owner = self._resolve_name(module, head)
            if isinstance(owner, tuple) and owner[1] in self.modules[owner[0]].classes:
                return self._method(owner[0], owner[1], rest) or name
        full = mod.imports.get(head, head) + (f".{rest}" if rest else "")
        return self._lookup(full) if full.startswith(self.packages) else full

    def resolve(self, caller: Function, call: ast.Call) -> list[Target] | str | None:
        """Project functions the call runs, or the external dotted name it calls."""
        func = call.func
        if (
            isinstance(func, ast.Attribute)
            and isinstance(func.value, ast.Name)
            and func.value.id in ("self", "cls")
            and caller.owner is not None
        ):
            owner = caller.owner.split(".")[-1] if "." in caller.owner else caller.owner
            found = self._method(caller.module, owner, func.attr)
            return [found] if found else None
        try:
            written = ast.unparse(func)
        except Exception:  # pragma: no cover
            return None
        if not all(part.isidentifier() for part in written.split(".")):
            written = f"?.{func.attr}" if isinstance(func, ast.Attribute) else ""
            target: Target | str = written  # a call on an expression's result
        else:
            target = self._resolve_name(caller.module, written)
        if isinstance(target, str):
            head, _, method = target.rpartition(".")
            local = head.split(".")[0] not in self.modules[caller.module].imports
            if method in self.unique_methods and (local or head == "?"):
                return [self.unique_methods[method]]  # x.method() on some object of ours
            return target or None
        module, name = target
        if name in self.modules[module].classes:
            return self._class_init(module, name)
        return [target]

    # -- Judging -------------------------------------------------------------------------

    def allowed(self, f: Function, call: ast.Call) -> bool:
        return bool(ALLOW.search(self.lines[f.path][call.lineno - 1]))

    def blocking(self, caller: Function, call: ast.Call) -> str | None:
        """Why this call blocks, or None."""
        resolved = self.resolve(caller, call)
        if resolved is None:
            return None
        if isinstance(resolved, str):
            if resolved in BLOCKING:
                return f"{resolved} {BLOCKING[resolved]}"
            method = resolved.rsplit(".", 1)[-1]
            if "." in resolved and method in BLOCKING_METHODS:
                return f".{method}() {BLOCKING_METHODS[method]}"
            return None
        for target in resolved:
            reason = self._function_blocks(target)
            if reason is not None:
                return reason
        return None

    def _function_blocks(self, target: Target) -> str | None:
        if target in self._why:
            return self._why[target]
        self._why[target] = None  # a recursion stops here
        f = self.functions[target]
        if target in KNOWN_BLOCKING:
            self._why[target] = f"{f.qualname} {KNOWN_BLOCKING[target]}"
            return self._why[target]
        if isinstance(f.node, ast.AsyncFunctionDef):
            return None  # calling it makes a coroutine; its body is checked on its own
        for call in f.calls:
            if self.allowed(f, call):
                continue
            reason = self.blocking(f, call)
            if reason is not None:
                where = f"{f.path.relative_to(self.root)}:{call.lineno}"
                self._why[target] = f"{f.qualname} ({where}) -> {reason}"
                return self._why[target]
        return None

    def problems(self) -> list[str]:
        found = set()
        for f in self.functions.values():
            if not (isinstance(f.node, ast.AsyncFunctionDef) or f.name in LOOP_METHODS):
                continue
            for call in f.calls:
                if self.allowed(f, call):
                    continue
                reason = self.blocking(f, call)
                if reason is not None:
                    where = f"{f.path.relative_to(self.root)}:{call.lineno}"
                    found.add(f"{where}: {f.qualname}: {ast.unparse(call.func)} -> {reason}")
        return sorted(found)


def test_nothing_blocks_the_event_loop() -> None:
    problems = Checker().problems()
    assert problems == [], "blocking calls on the event loop:\n" + "\n".join(problems)


FAKE_STORE = """\
import os


def save(path, data):
    fd = os.open(path, os.O_WRONLY)
    os.fsync(fd)


class Store:
    def flush_to_disk(self):
        save("x", b"")

    def peek(self):
        return 1
"""
FAKE_SERVER = """\
import time

import trio

from .store import Store, save


class Server:
    def __init__(self):
        self.store = Store()

    async def through_a_function(self):
        save("p", b"")

    async def through_a_method(self):
        self.store.flush_to_disk()

    async def in_a_thread(self):
        await trio.to_thread.run_sync(save, "p", b"")

    async def allowed(self):
        save("p", b"")  # blocking-ok: once at start, before any query

    async def allowed_without_reason(self):
        save("p", b"")  # blocking-ok:

    async def nested(self):
        def inner():
            save("p", b"")

        await trio.to_thread.run_sync(inner)

    async def harmless(self):
        return self.store.peek()

    async def sleeping(self):
        time.sleep(1)

    def handle(self, request):
        return open("/etc/hostname").read()
"""


def test_the_check_finds_what_it_should(tmp_path: Path) -> None:
    package = tmp_path / "fake"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "store.py").write_text(FAKE_STORE)
    (package / "server.py").write_text(FAKE_SERVER)
    problems = Checker(tmp_path, ("fake",)).problems()
    found = {p.split(": ")[1] for p in problems}
    assert found == {
        "Server.through_a_function",
        "Server.through_a_method",
        "Server.allowed_without_reason",
        "Server.sleeping",
        "Server.handle",
    }, problems
    chain = next(p for p in problems if "through_a_method" in p)
    assert "Store.flush_to_disk" in chain and "save" in chain and "os.fsync" in chain
