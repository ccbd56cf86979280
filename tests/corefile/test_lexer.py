"""Lexing rules: words, quotes, escapes, comments, BOM and CR (corefile.md §1)."""

from __future__ import annotations

import pytest

from pycorefile.corefile import CorefileError
from pycorefile.corefile._lexer import lex

from ._util import parse

WORDS = [
    # (input, expected token texts)
    ("a b c\nd e", ["a", "b", "c", "d", "e"]),
    ("", []),
    ("\n", []),
    (" ", []),
    ("\t\n", []),
    ("\ufeff", []),
    ("\ufeffa b", ["a", "b"]),
    ("a\ufeff", ["a\ufeff"]),  # only a leading BOM is dropped
    # braces, commas, parentheses and colons are ordinary characters
    ("foo{ {bar} { }", ["foo{", "{bar}", "{", "}"]),
    ("a,b (c) :53", ["a,b", "(c)", ":53"]),
    # quotes only at the start of a token
    ('a"b"', ['a"b"']),
    ('"foo"bar', ["foo", "bar"]),
    ('"foo""bar"', ["foo", "bar"]),
    ('""', [""]),
    ('"" ""', ["", ""]),
    ('"a b\tc"', ["a b\tc"]),
    ('"a\nb"', ["a\nb"]),
    # the one escape is \" inside quotes; other backslashes stay
    ('"a\\"b"', ['a"b']),
    ('"C:\\php\\php-cgi.exe"', ["C:\\php\\php-cgi.exe"]),
    ('"don\'t\\\\escape"', ["don't\\\\escape"]),
    ('a\\"b', ['a\\"b']),
    ("trailing\\\nnext", ["trailing\\", "next"]),
    # comments, even mid-word; # in quotes is literal
    ("foobar#x y\nz", ["foobar", "z"]),
    ("# whole line\na", ["a"]),
    ('"a#b" c', ["a#b", "c"]),
    ('a #"not a quote\nb', ["a", "b"]),
    # \r is dropped outside quotes (it does not even split a word)
    ("a\r\nb", ["a", "b"]),
    ("a\rb", ["ab"]),
    ('"x\r\ny"', ["x\ny"]),
    ('"x\ry"', ["x\ry"]),
    # whitespace is Go's unicode.IsSpace
    ("a\u00a0b\u2003c\u3000d\x85e", ["a", "b", "c", "d", "e"]),
    ("a\x1cb", ["a\x1cb"]),
    ("a\vb\fc", ["a", "b", "c"]),
]


@pytest.mark.parametrize(("text", "expected"), WORDS)
def test_words(text: str, expected: list[str]) -> None:
    assert [t.text for t in lex(text, "F")] == expected


POSITIONS = [
    # (input, [(text, line, column)])
    ("a  bb\n  c", [("a", 1, 1), ("bb", 1, 4), ("c", 2, 3)]),
    ('x "multi\nline" y\nz', [("x", 1, 1), ("multi\nline", 1, 3), ("y", 2, 7), ("z", 3, 1)]),
    ("\ufeffa b", [("a", 1, 1), ("b", 1, 3)]),
    ("a\r\nb", [("a", 1, 1), ("b", 2, 1)]),
    ("\u2028a", [("a", 1, 2)]),  # only \n ends a line
    ('\n\n  "q"', [("q", 3, 3)]),
]


@pytest.mark.parametrize(("text", "expected"), POSITIONS)
def test_positions(text: str, expected: list[tuple[str, int, int]]) -> None:
    assert [(t.text, t.line, t.column) for t in lex(text, "F")] == expected


def test_tokens_carry_the_file() -> None:
    assert {t.file for t in lex("a b\nc", "some/Corefile")} == {"some/Corefile"}


def test_end_line_counts_newlines_in_the_token() -> None:
    tok = lex('"a\nb\nc"', "F")[0]
    assert (tok.line, tok.end_line) == (1, 3)


@pytest.mark.parametrize("text", ['"abc', 'a "b\nc', '"', 'x "\\"'])
def test_unterminated_quote_is_an_error(text: str) -> None:
    with pytest.raises(CorefileError, match="Unterminated quoted string"):
        lex(text, "F")


def test_crlf_file_parses_like_lf_file() -> None:
    lf = ". {\n  forward . 1.1.1.1 {\n    max_fails 3\n  }\n  log\n}\n"
    assert parse(lf.replace("\n", "\r\n")) == parse(lf)


def test_a_value_with_spaces_in_quotes_stays_one_argument() -> None:
    assert parse('. {\n  template "{{ .Name }} 60 IN A"\n}') == [
        (["."], [("template", ["{{ .Name }} 60 IN A"])])
    ]


def test_a_multi_line_quoted_word_keeps_following_words_on_its_last_line() -> None:
    text = '. {\n  log "a\nb" c\n  errors\n}'
    assert parse(text) == [(["."], [("log", ["a\nb", "c"]), ("errors", [])])]
