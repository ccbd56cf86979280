"""Helpers shared by the Corefile tests."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pycorefile.corefile import CorefileError, Directive, ServerBlock, parse_corefile


def shape_directive(d: Directive) -> Any:
    """A directive without positions: (name, args) or (name, args, [nested...])."""
    if d.block is None:
        return (d.name, list(d.args))
    return (d.name, list(d.args), [shape_directive(n) for n in d.block])


def shape(blocks: list[ServerBlock]) -> list[Any]:
    """Blocks without positions: [(keys, [directives...]), ...]."""
    return [(list(b.keys), [shape_directive(d) for d in b.directives]) for b in blocks]


def parse(text: str, env: Mapping[str, str] | None = None, filename: str = "Corefile") -> list[Any]:
    """Parse with an empty environment unless one is given, and return the shape."""
    return shape(parse_corefile(text, filename, env={} if env is None else env))


def error(text: str, env: Mapping[str, str] | None = None, filename: str = "Corefile") -> str:
    """Parse text that must fail and return the error's first line."""
    try:
        parse_corefile(text, filename, env={} if env is None else env)
    except CorefileError as err:
        return str(err).splitlines()[0]
    raise AssertionError(f"no error for {text!r}")
