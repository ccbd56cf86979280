"""Go regular expressions (RE2 syntax) in Python: translated to ``re``, or refused.

CoreDNS's plugins take Go ``regexp`` patterns (template's ``match``, rewrite's
``regex`` rules, auto's file pattern). Python's ``re`` reads most of them the
same, but not all: some Go syntax Python refuses or reads differently, and some
Python syntax RE2 refuses. ``compile_re2`` translates a pattern so that it
matches what Go would match, and raises ``Re2Error`` for what it cannot
translate, so a plugin refuses the pattern when it is set up, never when a
query comes.

Translated:

- ``\\d \\w \\s \\b`` and their negations are ASCII only (``re.ASCII``); ``\\s``
  is Go's ``[\\t\\n\\f\\r ]`` (no ``\\v``);
- ``$`` (without the ``m`` flag) is the end of the text only (``\\Z``), ``\\z``
  is ``\\Z``;
- ``(?<name>...)`` is ``(?P<name>...)``;
- ``\\Q...\\E`` is the literal text between them;
- an octal escape (``\\0``, ``\\12``, ``\\123``) and ``\\x{...}`` are the character;
- ``[[:alpha:]]`` and the other ASCII classes are their ranges; a ``[`` and
  the pairs ``&& || ~~ --`` inside a class are literal, as in Go;
- ``x{,n}`` is literal text in Go: its brace is escaped.

Refused, with the reason (RE2 refuses them too, or Python cannot say them):
look-around, back-references, conditionals, comments groups, possessive and
atomic forms, ``\\p{...}``/``\\pL`` classes, ``\\C``, the ``U`` flag, flags
in the middle of a pattern, negated POSIX classes, repeat counts over 1000,
patterns over 10000 characters.

Left as they are (the same in both): literals, ``. ^ * + ? | ( ) [...]``,
``(?:...)``, ``(?P<name>...)``, ``(?i)``/``(?s)``/``(?m)`` at the start,
``{n} {n,} {n,m}``, ``\\A``, the usual escapes.

Difference that remains: Python's engine backtracks, RE2's does not. A
pattern with nested repeats (``(a+)+``) can take long on a crafted name; names
are at most 255 bytes, which bounds but does not remove it.
"""

from __future__ import annotations

import re

__all__ = ["MAX_PATTERN_LENGTH", "Re2Error", "compile_re2", "translate_re2"]

MAX_PATTERN_LENGTH = 10000
"""CoreDNS refuses longer patterns (template, rewrite: "regex pattern too long")."""

_MAX_REPEAT = 1000
"""RE2's largest repeat count."""

_POSIX = {
    "alnum": "0-9A-Za-z",
    "alpha": "A-Za-z",
    "ascii": "\\x00-\\x7f",
    "blank": "\\t ",
    "cntrl": "\\x00-\\x1f\\x7f",
    "digit": "0-9",
    "graph": "!-~",
    "lower": "a-z",
    "print": " -~",
    "punct": "!-/:-@\\[-`{-~",
    "space": "\\t\\n\\v\\f\\r ",
    "upper": "A-Z",
    "word": "0-9A-Za-z_",
    "xdigit": "0-9A-Fa-f",
}

_GO_SPACE = "\\t\\n\\f\\r "
_SIMPLE_ESCAPES = set("afnrtv")
_CLASS_ESCAPES = {"d", "D", "w", "W"}
_REPEAT = re.compile(r"\{(\d*)(,?)(\d*)\}")


class Re2Error(ValueError):
    """A pattern Go would refuse, or that cannot be said in Python's ``re``."""


def compile_re2(pattern: str, flags: int = 0) -> re.Pattern[str]:
    """``pattern`` (Go RE2 syntax) compiled with Python's ``re``, matching what Go matches.

    Go's ``MatchString``/``FindStringSubmatch`` are ``search`` here; a group that
    took no part in the match is None here, ``""`` in Go.
    """
    translated = translate_re2(pattern)
    try:
        return re.compile(translated, flags | re.ASCII)
    except re.error as exc:
        raise Re2Error(f"invalid regex {pattern!r}: {exc}") from None


def translate_re2(pattern: str) -> str:
    """The Python ``re`` pattern for a Go RE2 pattern; ``Re2Error`` when there is none."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise Re2Error(f"regex pattern too long: {len(pattern)} > {MAX_PATTERN_LENGTH}")
    return _Translator(pattern).run()


class _Translator:
    def __init__(self, pattern: str) -> None:
        self.src = pattern
        self.pos = 0
        self.out: list[str] = []
        self.multiline = False

    def fail(self, what: str) -> Re2Error:
        return Re2Error(f"invalid regex {self.src!r}: {what} is not supported (RE2 syntax)")

    def run(self) -> str:
        src = self.src
        while self.pos < len(src):
            char = src[self.pos]
            if char == "\\":
                self.out.append(self.escape(in_class=False))
            elif char == "[":
                self.out.append(self.char_class())
            elif char == "(":
                self.out.append(self.group())
            elif char == "$":
                self.out.append("$" if self.multiline else r"\Z")
                self.pos += 1
            elif char == "{":
                self.out.append(self.brace())
            elif char in "*+?" and src.startswith("+", self.pos + 1):
                raise self.fail(f"the possessive repeat {char}+")
            else:
                self.out.append(char)
                self.pos += 1
        return "".join(self.out)

    # -- Pieces -----------------------------------------------------------------------

    def brace(self) -> str:
        match = _REPEAT.match(self.src, self.pos)
        if match is None or not match.group(1):
            self.pos += 1
            return r"\{"  # literal in Go (Python would read ``{,n}`` as a repeat)
        for count in (match.group(1), match.group(3)):
            if count and int(count) > _MAX_REPEAT:
                raise Re2Error(f"invalid regex {self.src!r}: invalid repeat count {match.group()}")
        self.pos = match.end()
        if self.src.startswith("+", self.pos):
            raise self.fail("a possessive repeat")
        return match.group()

    def group(self) -> str:
        src, start = self.src, self.pos
        if not src.startswith("(?", start):
            self.pos += 1
            return "("
        rest = src[start + 2 :]
        if rest.startswith("P<") or rest.startswith(":"):
            self.pos += 2
            return "(?"
        if rest.startswith("<") and not rest.startswith(("<=", "<!")):
            self.pos += 3
            return "(?P<"
        if rest.startswith(("=", "!", "<=", "<!")):
            raise self.fail("look-around")
        if rest.startswith("P="):
            raise self.fail("a back-reference")
        if rest.startswith(("#", "(", ">")):
            raise self.fail(f"the group (?{rest[0]}")
        flags = re.match(r"([imsU]*)(?:-([imsU]*))?([:)])", rest)
        if flags is None:
            raise self.fail(f"the group {src[start : start + 4]}")
        on, off, end = flags.group(1), flags.group(2) or "", flags.group(3)
        if "U" in on + off:
            raise self.fail("the U (ungreedy) flag")
        self.pos = start + 2 + flags.end()
        if end == ":":
            return f"(?{on}{'-' + off if off else ''}:"
        if off or start != 0:
            raise self.fail("a flag group other than at the start of the pattern")
        self.multiline = "m" in on
        return f"(?{on})" if on else ""

    def escape(self, in_class: bool) -> str:
        src = self.src
        if self.pos + 1 >= len(src):
            raise Re2Error(f"invalid regex {src!r}: trailing backslash at end of expression")
        char = src[self.pos + 1]
        self.pos += 2
        if char in "01234567":
            digits = char
            while len(digits) < 3 and self.pos < len(src) and src[self.pos] in "01234567":
                digits += src[self.pos]
                self.pos += 1
            if char != "0" and len(digits) == 1:
                raise self.fail(f"the back-reference \\{char}")
            return f"\\u{int(digits, 8):04x}"
        if char in "89":
            raise self.fail(f"the back-reference \\{char}")
        if char == "x" and src.startswith("{", self.pos):
            end = src.find("}", self.pos)
            digits = src[self.pos + 1 : end] if end > 0 else ""
            if not digits or not re.fullmatch(r"[0-9A-Fa-f]{1,6}", digits):
                raise Re2Error(f"invalid regex {src!r}: invalid escape \\x{{{digits}")
            self.pos = end + 1
            value = int(digits, 16)
            if value > 0x10FFFF:
                raise Re2Error(f"invalid regex {src!r}: invalid escape \\x{{{digits}}}")
            return f"\\U{value:08x}"
        if char == "Q":
            end = src.find("\\E", self.pos)
            literal = src[self.pos :] if end < 0 else src[self.pos : end]
            self.pos = len(src) if end < 0 else end + 2
            return re.escape(literal)
        if char == "z" and not in_class:
            return r"\Z"
        if char == "s":
            return _GO_SPACE if in_class else f"[{_GO_SPACE}]"
        if char == "S":
            return "\\S" if in_class else f"[^{_GO_SPACE}]"
        if char in "pP":
            raise self.fail(f"the Unicode class \\{char}")
        if char == "C":
            raise self.fail("\\C")
        if char == "Z" or char in "GXRKhHNoe":
            raise self.fail(f"the escape \\{char}")
        if char in _CLASS_ESCAPES or char in _SIMPLE_ESCAPES or char in "AbBx":
            return "\\" + char
        if char.isalnum():
            raise Re2Error(f"invalid regex {src!r}: invalid escape sequence \\{char}")
        return "\\" + char  # escaped punctuation: the same in both

    def char_class(self) -> str:
        src = self.src
        self.pos += 1
        parts = ["["]
        if src.startswith("^", self.pos):
            parts.append("^")
            self.pos += 1
        first = True
        while True:
            if self.pos >= len(src):
                raise Re2Error(f"invalid regex {src!r}: missing closing ]")
            char = src[self.pos]
            if char == "]" and not first:
                self.pos += 1
                parts.append("]")
                return "".join(parts)
            first = False
            if char == "[" and src.startswith("[:", self.pos):
                end = src.find(":]", self.pos + 2)
                name = src[self.pos + 2 : end] if end > 0 else ""
                if name.startswith("^"):
                    raise self.fail(f"the negated class [:{name}:]")
                if name not in _POSIX:
                    raise Re2Error(f"invalid regex {src!r}: invalid character class range")
                parts.append(_POSIX[name])
                self.pos = end + 2
            elif char == "\\":
                parts.append(self.escape(in_class=True))
            elif char in "[&|~-" and (char == "[" or src.startswith(char * 2, self.pos)):
                parts.append("\\" + char)  # literal in Go; a set operation to come in Python
                self.pos += 1
            else:
                parts.append("\\]" if char == "]" else char)
                self.pos += 1
