"""The file side of ``import``: glob patterns and reading imported files.

This is the only part of the Corefile package that touches the file system.
Globbing follows Go's ``filepath.Glob`` (which CoreDNS uses): ``*`` and ``?``
never match ``/`` but do match a leading dot, ``\\`` escapes the next
character, and names are returned sorted, directory by directory.
"""

from __future__ import annotations

import os
import posixpath
import re
import stat
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

_META = "*?[\\"
# Not a CoreDNS limit: an imported file larger than this is surely a mistake.
MAX_IMPORT_SIZE = 16 << 20


class ImportProblem(Exception):
    """An import that cannot be carried out; the message is user-facing."""


@dataclass(frozen=True, slots=True)
class ImportMatch:
    """The outcome of resolving an import pattern to files."""

    paths: tuple[str, ...]
    warning: str | None = None


class Importer(Protocol):
    """What the parser needs to import files; swapped out in tests if needed."""

    def resolve(self, pattern: str, base_dir: str) -> ImportMatch:
        """Return the files ``pattern`` names, relative to ``base_dir``."""
        ...

    def read(self, path: str) -> str:
        """Return the text of one imported file."""
        ...


def _has_meta(path: str) -> bool:
    """Whether Go's glob would treat ``path`` as a pattern."""
    return any(c in path for c in _META)


def _escape(path: str) -> str:
    """Make ``path`` match itself literally inside a Go glob pattern."""
    return "".join("\\" + c if c in _META else c for c in path)


@lru_cache(maxsize=256)
def _component_regex(pattern: str) -> re.Pattern[str]:
    """Compile one path component of a Go glob pattern (no ``[...]`` classes)."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            if i + 1 >= len(pattern):
                raise ImportProblem("syntax error in pattern")
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            raise ImportProblem("syntax error in pattern")
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out), re.DOTALL)


def _clean(path: str) -> str:
    """Lexically clean a path as Go's ``filepath.Clean`` does."""
    cleaned = posixpath.normpath(path)
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    return cleaned


def _list_matching(directory: str, regex: re.Pattern[str]) -> list[str]:
    """The entries of ``directory`` whose names match ``regex``, sorted by name."""
    try:
        if not os.path.isdir(directory or "."):
            return []
        names = sorted(os.listdir(directory or "."))
    except OSError:
        return []
    return [posixpath.join(directory, name) for name in names if regex.fullmatch(name)]


def go_glob(pattern: str) -> list[str]:
    """Expand ``pattern`` like Go's ``filepath.Glob`` (errors are ImportProblem).

    Components are expanded left to right; the matches of each wildcard
    component are sorted within their directory, which gives Go's order.
    """
    if not _has_meta(pattern):
        return [pattern] if os.path.lexists(pattern) else []
    parts = pattern.split("/")
    for part in parts:
        _component_regex(part)  # a malformed pattern is an error even if nothing matches
    current = ["/"] if pattern.startswith("/") else [""]
    parts = [part for part in parts if part]
    for index, part in enumerate(parts):
        if _has_meta(part):
            regex = _component_regex(part)
            current = [found for d in current for found in _list_matching(d, regex)]
        elif index == len(parts) - 1:
            current = [p for d in current if os.path.lexists(p := posixpath.join(d, part))]
        else:
            current = [posixpath.join(d, part) for d in current]
        if not current:
            break
    return current


def check_pattern(pattern: str) -> None:
    """CoreDNS's guard against expensive globs: one ``*``, one ``?``, no ``[...]``."""
    if pattern.count("*") > 1 or pattern.count("?") > 1 or ("[" in pattern and "]" in pattern):
        raise ImportProblem(
            f"Glob pattern may only contain one wildcard (*), but has others: {pattern}"
        )


class FileImporter:
    """Imports from the real file system."""

    def resolve(self, pattern: str, base_dir: str) -> ImportMatch:
        """Resolve ``pattern`` against ``base_dir`` (the importing file's directory).

        The wildcard limits apply to the pattern as written; unlike CoreDNS, the
        importing file's own directory is taken literally even if its name holds
        glob characters.
        """
        check_pattern(pattern)
        full = pattern if pattern.startswith("/") else _escape(base_dir) + "/" + pattern
        try:
            matches = go_glob(_clean(full))
        except ImportProblem as err:
            raise ImportProblem(f"Failed to use import pattern {pattern}: {err}") from None
        if not matches:
            if any(c in pattern for c in "*?[]"):
                return ImportMatch((), f"No files matching import glob pattern: {pattern}")
            raise ImportProblem(f"File to import not found: {pattern}")
        return ImportMatch(tuple(matches))

    def read(self, path: str) -> str:
        """Read an imported file: a regular file of sane size, so nothing can block us."""
        try:
            info = os.stat(path)
            if stat.S_ISDIR(info.st_mode):
                raise ImportProblem(f"Could not import {path}: is a directory")
            if not stat.S_ISREG(info.st_mode):
                raise ImportProblem(f"Could not import {path}: not a regular file")
            with open(path, "rb") as fh:
                data = fh.read(MAX_IMPORT_SIZE + 1)
        except OSError as err:
            raise ImportProblem(f"Could not import {path}: {err.strerror or err}") from None
        if len(data) > MAX_IMPORT_SIZE:
            raise ImportProblem(f"Could not import {path}: larger than {MAX_IMPORT_SIZE} bytes")
        return data.decode("utf-8", errors="replace")
