"""The Corefile language: lexing, parsing, imports and server block keys.

``parse_corefile`` turns Corefile text into ``ServerBlock`` objects exactly as
CoreDNS groups it (syntax only: directive names are not checked here);
``normalize_keys`` turns a block's keys into ``ZoneKey`` values. Every user
mistake is reported as a ``CorefileError``.

The parser (and lark) is imported on first use only: a server started from
the command line parses in a short-lived child process
(``parse_corefile_apart``), so the grammar's few megabytes never stay resident
beside the cache.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from ._apart import parse_corefile_apart
from ._imports import FileImporter
from ._keys import find_duplicate_keys, normalize_keys, zone_syntax_warning
from ._model import CorefileError, Directive, ServerBlock, Token, ZoneKey

__all__ = [
    "CorefileError",
    "Directive",
    "ServerBlock",
    "Token",
    "ZoneKey",
    "blocks_to_json",
    "find_duplicate_keys",
    "load_corefile",
    "normalize_keys",
    "parse_corefile",
    "parse_corefile_apart",
    "zone_syntax_warning",
]


def parse_corefile(
    text: str,
    filename: str = "Corefile",
    *,
    env: Mapping[str, str] | None = None,
) -> list[ServerBlock]:
    """Parse Corefile ``text``; ``filename`` is used in errors and to resolve imports.

    ``env`` supplies ``{$NAME}``/``{%NAME%}`` values and defaults to the process
    environment.
    """
    from ._parser import parse  # lark: imported only where a Corefile is parsed

    return parse(text, filename, os.environ if env is None else env, FileImporter())


def load_corefile(path: str, *, env: Mapping[str, str] | None = None) -> list[ServerBlock]:
    """Read and parse the Corefile at ``path``."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as err:
        raise CorefileError(f"Could not read Corefile: {err.strerror or err}", path) from None
    return parse_corefile(data.decode("utf-8", errors="replace"), path, env=env)


def _directive_json(directive: Directive) -> dict[str, Any]:
    """One directive in the ``-dump`` shape, its block's lines nested."""
    return {
        "name": directive.name,
        "args": list(directive.args),
        "file": directive.file,
        "line": directive.line,
        "block": (
            None if directive.block is None else [_directive_json(d) for d in directive.block]
        ),
    }


def blocks_to_json(blocks: Iterable[ServerBlock]) -> list[dict[str, Any]]:
    """The ``-dump`` form of parsed blocks: plain lists and dicts, ready for ``json.dumps``."""
    return [
        {
            "keys": list(block.keys),
            "file": block.file,
            "line": block.line,
            "directives": [_directive_json(d) for d in block.directives],
        }
        for block in blocks
    ]
