"""The parsed Corefile: plain, immutable data with source positions, no I/O."""

from __future__ import annotations

import linecache
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Token:
    """One lexed word of the Corefile, with where it was written."""

    value: str
    file: str
    line: int
    column: int
    # The text of the line the token starts on, for error messages.
    source_line: str | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Directive:
    """A directive line: its name, arguments and optional nested block.

    A line inside a directive's block is itself a ``Directive`` whose name is
    the line's first token, so plugins parse their options the same way they
    parse the directive itself.
    """

    name: str
    args: tuple[str, ...]
    file: str
    line: int
    column: int
    block: tuple[Directive, ...] | None = None
    arg_tokens: tuple[Token, ...] = field(default=(), compare=False, repr=False)

    def arg_position(self, index: int) -> tuple[str, int, int]:
        """The ``(file, line, column)`` of argument ``index``, or of the name."""
        if 0 <= index < len(self.arg_tokens):
            tok = self.arg_tokens[index]
            return tok.file, tok.line, tok.column
        return self.file, self.line, self.column


@dataclass(frozen=True, slots=True)
class ServerBlock:
    """A server block: its keys as written (after env substitution) and directives."""

    keys: tuple[str, ...]
    directives: tuple[Directive, ...]
    file: str
    line: int
    column: int = 1
    key_tokens: tuple[Token, ...] = field(default=(), compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class ZoneKey:
    """A normalised server-block key: ``transport://zone:port``."""

    transport: str
    zone: str
    port: int

    def __str__(self) -> str:
        return f"{self.transport}://{self.zone}:{self.port}"


class CorefileError(Exception):
    """A mistake in a Corefile, reported as ``FILE:LINE:COL - message``.

    ``source_line`` (the offending line's text) is shown under the message with
    a caret under the column when it is known.
    """

    def __init__(
        self,
        message: str,
        file: str = "Corefile",
        line: int = 0,
        column: int = 0,
        source_line: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line
        self.column = column
        self.source_line = source_line

    def __reduce__(self) -> tuple[type[CorefileError], tuple[str, str, int, int, str | None]]:
        # Pickled whole (a child process reports it to the server).
        return (type(self), (self.message, self.file, self.line, self.column, self.source_line))

    def __str__(self) -> str:
        text = f"{self.file}:{self.line}:{self.column} - {self.message}"
        source = self.source_line
        if source is None and self.line > 0 and self.file not in ("stdin", "Corefile"):
            source = linecache.getline(self.file, self.line) or None
        if source is not None and self.column > 0:
            # Keep the line's tabs in front of the caret so it lines up.
            lead = "".join(c if c == "\t" else " " for c in source[: self.column - 1])
            text += f"\n{source.rstrip()}\n{lead}^"
        return text
