"""Blocks, braces, keys and commas (corefile.md §2-3.2)."""

from __future__ import annotations

from typing import Any

import pytest

from pycorefile.corefile import parse_corefile

from ._util import error, parse

BLOCKS: list[tuple[str, list[Any]]] = [
    # shape of a Corefile
    ("", []),
    ('""', []),
    ("# nothing\n\n", []),
    (". {\n}", [(["."], [])]),
    (". { }", [(["."], [])]),
    (". {\n  whoami\n  log\n}", [(["."], [("whoami", []), ("log", [])])]),
    (
        "a {\n  x\n}\nb {\n  y\n}\n",
        [(["a"], [("x", [])]), (["b"], [("y", [])])],
    ),
    # a server block's "{" may stand alone on the next line
    ("a b\n{\n  x\n}", [(["a", "b"], [("x", [])])]),
    ("a\n\n\n{\n}", [(["a"], [])]),
    # a directive may follow the opening brace on the same line
    (". { whoami\n}", [(["."], [("whoami", [])])]),
    # a new block may start on the line of the previous closing brace
    (". {\n} example.org {\n}", [(["."], []), (["example.org"], [])]),
    # a file with one block may leave out the braces
    ("localhost", [(["localhost"], [])]),
    ("localhost\n", [(["localhost"], [])]),
    ("localhost\n  dir1", [(["localhost"], [("dir1", [])])]),
    ("localhost:1234\n  dir1 foo bar", [(["localhost:1234"], [("dir1", ["foo", "bar"])])]),
    (
        "127.0.0.1\n  dir1 {\n    bar baz\n  }\n  dir2 {\n    foo bar\n  }",
        [(["127.0.0.1"], [("dir1", [], [("bar", ["baz"])]), ("dir2", [], [("foo", ["bar"])])])],
    ),
    # ... and a stray "}" at the start of a line ends such a block, as in CoreDNS
    (
        "a\n  x\n}\nb {\n  y\n}",
        [(["a"], [("x", [])]), (["b"], [("y", [])])],
    ),
    ("a\n}", [(["a"], [])]),
    # directive blocks, nested
    (
        ". {\n  forward . 1.1.1.1 {\n    max_fails 3\n  }\n}",
        [(["."], [("forward", [".", "1.1.1.1"], [("max_fails", ["3"])])])],
    ),
    (
        ". {\n  dir1 {\n    nested {\n      foo\n    }\n  }\n  dir2 foo bar\n}",
        [(["."], [("dir1", [], [("nested", [], [("foo", [])])]), ("dir2", ["foo", "bar"])])],
    ),
    (". {\n  d {\n  }\n}", [(["."], [("d", [], [])])]),
    (". {\n  d { }\n}", [(["."], [("d", [], [])])]),
    (". {\n  d { a 1\n  }\n}", [(["."], [("d", [], [("a", ["1"])])])]),
    # a brace joined to a word is just part of the word
    (". {\n  d {}\n  e a{\n}", [(["."], [("d", ["{}"]), ("e", ["a{"])])]),
    # quoted words are plain words, including in the name position
    ('. {\n  "dir" "a b" ""\n}', [(["."], [("dir", ["a b", ""])])]),
    # a quoted brace is still a brace, as in CoreDNS
    ('. {\n  d "{"\n    x\n  "}"\n}', [(["."], [("d", [], [("x", [])])])]),
    # "import" is literal in the middle of a line
    (". {\n  log import x\n}", [(["."], [("log", ["import", "x"])])]),
    # a block inside a server block that looks like a snippet is a directive
    (". {\n  (s) {\n    x\n  }\n}", [(["."], [("(s)", [], [("x", [])])])]),
]


@pytest.mark.parametrize(("text", "expected"), BLOCKS)
def test_blocks(text: str, expected: list[Any]) -> None:
    assert parse(text) == expected


KEYS: list[tuple[str, list[list[str]]]] = [
    ("a b c {\n}", [["a", "b", "c"]]),
    ("a, b {\n}", [["a", "b"]]),
    ("a,b {\n}", [["a,b"]]),  # a comma inside a word is not a separator
    ("example.org,example.com:1053 {\n}", [["example.org,example.com:1053"]]),
    ("a,\nb,\nc {\n}", [["a", "b", "c"]]),
    ("a,\n\n  b\n{\n}", [["a", "b"]]),
    ("a, b c,\nd {\n}", [["a", "b", "c", "d"]]),
    (
        "http://host1.com,\n  http://host2.com,\n  https://host3.com",
        [["http://host1.com", "http://host2.com", "https://host3.com"]],
    ),
    ("host1:80, http://host2.com\n  dir1", [["host1:80", "http://host2.com"]]),
    # empty keys are skipped; a lone "," leaves an empty key, as in CoreDNS
    ('a "" b {\n}', [["a", "b"]]),
    (", x {\n}", [["", "x"]]),
    ('a, ""\nb {\n}', [["a", "b"]]),
    # "(name)" with other keys is not a snippet
    ("(a) b {\n}", [["(a)", "b"]]),
    ("(a), (b) {\n}", [["(a)", "(b)"]]),
    # keys end at the newline unless a comma continues them
    ("a\nb {\n}", [["a"]]),
]


@pytest.mark.parametrize(("text", "expected"), KEYS)
def test_keys(text: str, expected: list[list[str]]) -> None:
    assert [keys for keys, _ in parse(text)] == expected


def test_keys_as_written_are_kept_for_the_dump() -> None:
    blocks = parse_corefile("EXAMPLE.org:1053, dns://x {\n}\n", env={})
    assert blocks[0].keys == ("EXAMPLE.org:1053", "dns://x")


def test_a_block_of_only_empty_keys_is_dropped(corefile_log: pytest.LogCaptureFixture) -> None:
    assert parse("{$UNSET} {\n  whoami\n}\nb {\n}") == [(["b"], [])]
    assert "Corefile:1: server block has no keys" in corefile_log.text


def test_positions_of_blocks_directives_and_arguments() -> None:
    text = "# c\n  a.example  b.example {\n  forward . {\n\tx  y\n  }\n}\n"
    (block,) = parse_corefile(text, "cf", env={})
    assert (block.file, block.line, block.column) == ("cf", 2, 3)
    assert [(t.value, t.line, t.column) for t in block.key_tokens] == [
        ("a.example", 2, 3),
        ("b.example", 2, 14),
    ]
    (fwd,) = block.directives
    assert (fwd.name, fwd.file, fwd.line, fwd.column) == ("forward", "cf", 3, 3)
    assert fwd.arg_position(0) == ("cf", 3, 11)
    assert fwd.arg_position(5) == ("cf", 3, 3)  # out of range: the name
    assert fwd.block is not None
    (x,) = fwd.block
    assert (x.name, x.line, x.column, x.args) == ("x", 4, 2, ("y",))
    assert x.arg_position(0) == ("cf", 4, 5)
    assert x.arg_tokens[0].source_line == "\tx  y"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # CoreDNS's own messages
        (". { whoami }", "Corefile:1:12 - Unexpected '}' because no matching opening brace"),
        ("}", "Corefile:1:1 - Unexpected '}' because no matching opening brace"),
        (". {\n  d {\n  } }\n}", "Corefile:3:5 - Unexpected '}' because no matching opening brace"),
        ("a\n  d {\n  } }", "Corefile:3:5 - Unexpected '}' because no matching opening brace"),
        (". {\n}\n}", "Corefile:3:1 - Unexpected '}' because no matching opening brace"),
        ("a, {\n}", "Corefile:1:4 - Expected another address but had '{' - check for extra comma"),
        ("a,\n{\n}", "Corefile:2:1 - Expected another address but had '{' - check for extra comma"),
        (
            'a, "" {\n}',
            "Corefile:1:7 - Expected another address but had '{' - check for extra comma",
        ),
        ("a,", "Corefile:1:1 - Unexpected EOF"),
        ("a b,\n", "Corefile:1:3 - Unexpected EOF"),
        (". {\n  whoami\n", "Corefile:2:3 - Unexpected EOF"),
        (". {\n  d {\n    x\n}", "Corefile:4:1 - Unexpected EOF"),
        # where CoreDNS accepts a broken layout that its plugins then misread
        (". {\n  d\n  {\n  }\n}", "Corefile:3:3 - Unexpected '{' where a directive should start"),
        (". {\n  {\n}", "Corefile:2:3 - Unexpected '{' where a directive should start"),
        (". { {\n}", "Corefile:1:5 - Unexpected '{' where a directive should start"),
        (". {\n  d { a }\n}", "Corefile:2:9 - Unexpected '}' because no matching opening brace"),
        (
            ". {\n  d {\n    a }\n}",
            "Corefile:3:7 - Unexpected '}' because no matching opening brace",
        ),
        (". {\n  d {\n  } x\n}", "Corefile:3:5 - Unexpected token 'x' after '}'"),
        (". {\n  d {\n  } {\n}", "Corefile:3:5 - Unexpected '{' after '}'"),
        # and where CoreDNS silently drops a block without keys
        ("{\n  whoami\n}", "Corefile:1:1 - Unexpected '{' - a server block needs at least one key"),
        (". {\n}\n{\n}", "Corefile:3:1 - Unexpected '{' - a server block needs at least one key"),
    ],
)
def test_brace_and_key_errors(text: str, message: str) -> None:
    assert error(text).startswith(message)


def test_unclosed_block_error_names_the_open_brace() -> None:
    assert error(". {\n  d {\n    x\n").endswith("the '{' at Corefile:2:5 is never closed")
    assert error(". {\n  whoami\n").endswith("the '{' at Corefile:1:3 is never closed")


def test_closing_brace_hint_only_inside_a_block() -> None:
    assert error(". { whoami }").endswith("must be the first token on its line")
    assert error("}") == "Corefile:1:1 - Unexpected '}' because no matching opening brace"


def test_nesting_is_bounded() -> None:
    deep = ". {\n" + "".join(f"{'  ' * i}d{i} {{\n" for i in range(1, 120))
    assert error(deep).endswith("Blocks nested too deeply (more than 100)")
    ok = ". {\n" + "".join(f"d{i} {{\n" for i in range(99)) + "}\n" * 100
    assert len(parse(ok)) == 1
