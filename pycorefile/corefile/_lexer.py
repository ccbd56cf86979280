"""The Corefile lexer: splits text into words exactly as CoreDNS does.

Only ``"`` and ``#`` are special; braces, commas and parentheses are ordinary
characters, so structure is decided later by the parser. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._model import CorefileError

# The characters Go's unicode.IsSpace accepts (Python's str.isspace differs:
# it also takes the ASCII separators U+001C..U+001F).
GO_SPACE = frozenset(
    "\t\n\v\f\r \x85\xa0\u1680"
    "\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)

BOM = "\ufeff"


@dataclass(frozen=True, slots=True)
class RawToken:
    """A lexed word before environment substitution, with its start position."""

    text: str
    file: str
    line: int
    column: int

    @property
    def end_line(self) -> int:
        """The line the token ends on (a quoted token may span lines)."""
        return self.line + self.text.count("\n")


def strip_bom(text: str) -> str:
    """Drop one leading byte-order mark, as CoreDNS does."""
    return text[1:] if text.startswith(BOM) else text


def source_lines(text: str) -> list[str]:
    """The file's lines as the lexer counts them (only ``\\n`` ends a line)."""
    return strip_bom(text).split("\n")


def lex(text: str, file: str) -> list[RawToken]:
    """Split ``text`` into tokens the way the CoreDNS (caddyfile) lexer does.

    Differences from CoreDNS, both for clearer behaviour: an unterminated
    quoted string is an error (CoreDNS silently ends it at end of file), and a
    CRLF inside quotes becomes LF (CoreDNS keeps the ``\\r`` there).
    """
    text = strip_bom(text)
    tokens: list[RawToken] = []
    val: list[str] = []
    in_token = False
    quoted = escaped = comment = False
    line = 1
    line_start = 0
    start_line = start_col = 0
    n = len(text)
    i = 0
    while i < n:
        ch = text[i]
        col = i - line_start + 1
        i += 1
        if quoted:
            if not escaped:
                if ch == "\\":
                    escaped = True
                    continue
                if ch == '"':
                    quoted = False
                    tokens.append(RawToken("".join(val), file, start_line, start_col))
                    val = []
                    in_token = False
                    continue
            if ch == "\r" and i < n and text[i] == "\n":
                continue
            if escaped and ch != '"':
                val.append("\\")
            if ch == "\n":
                line += 1
                line_start = i
            val.append(ch)
            escaped = False
            continue

        if ch in GO_SPACE:
            if ch == "\r":
                continue
            if ch == "\n":
                line += 1
                line_start = i
                comment = False
            if in_token:
                tokens.append(RawToken("".join(val), file, start_line, start_col))
                val = []
                in_token = False
            continue

        if ch == "#":
            comment = True
        if comment:
            continue

        if not in_token:
            in_token = True
            start_line, start_col = line, col
            if ch == '"':
                quoted = True
                continue
        val.append(ch)

    if quoted:
        lines = text.split("\n")
        raise CorefileError(
            "Unterminated quoted string: missing closing '\"'",
            file,
            start_line,
            start_col,
            lines[start_line - 1],
        )
    if in_token:
        tokens.append(RawToken("".join(val), file, start_line, start_col))
    return tokens
