"""``bufsize [SIZE]``: pure parsing."""

from __future__ import annotations

from pycorefile import Directive, SetupError, check_args

DEFAULT_SIZE = 1232
"""CoreDNS's default, DNS Flag Day 2020's recommendation."""
MIN_SIZE = 512
MAX_SIZE = 4096


def parse_bufsize(directive: Directive) -> int:
    """The payload limit of one ``bufsize`` directive (CoreDNS's rules: 512 to 4096)."""
    check_args(directive, 0, 1)
    if not directive.args:
        return DEFAULT_SIZE
    text = directive.args[0]
    size = int(text) if text.isascii() and text.isdigit() else -1
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise SetupError(
            f"Wrong argument count or unexpected line ending after '{text}' "
            f"(SIZE is a number of bytes from {MIN_SIZE} to {MAX_SIZE})",
            directive,
            0,
        )
    return size
