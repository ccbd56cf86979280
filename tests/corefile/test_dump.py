"""The -dump JSON shape and the error format (FILE:LINE:COL, source line, caret)."""

from __future__ import annotations

import json

import pytest

from pycorefile.corefile import CorefileError, blocks_to_json, parse_corefile

CORE = """\
# a comment
example.org:1053, {$ZONE} {
    forward . 8.8.8.8 {
        max_fails 3
    }
    log
}
"""


def test_dump_shape() -> None:
    blocks = parse_corefile(CORE, "Corefile", env={"ZONE": "example.com"})
    dumped = blocks_to_json(blocks)
    assert dumped == [
        {
            "keys": ["example.org:1053", "example.com"],
            "file": "Corefile",
            "line": 2,
            "directives": [
                {
                    "name": "forward",
                    "args": [".", "8.8.8.8"],
                    "file": "Corefile",
                    "line": 3,
                    "block": [
                        {
                            "name": "max_fails",
                            "args": ["3"],
                            "file": "Corefile",
                            "line": 4,
                            "block": None,
                        }
                    ],
                },
                {"name": "log", "args": [], "file": "Corefile", "line": 6, "block": None},
            ],
        }
    ]
    assert json.loads(json.dumps(dumped)) == dumped


def test_dump_of_nothing() -> None:
    assert blocks_to_json(parse_corefile("", env={})) == []


def test_dump_allows_unknown_directive_names() -> None:
    (block,) = blocks_to_json(parse_corefile(". {\n  no_such_plugin x\n}\n", env={}))
    assert block["directives"][0]["name"] == "no_such_plugin"


ERRORS = [
    # (text, the three lines of str(error))
    (
        ". { whoami }\n",
        [
            "Corefile:1:12 - Unexpected '}' because no matching opening brace"
            " - a closing '}' must be the first token on its line",
            ". { whoami }",
            "           ^",
        ],
    ),
    (
        "a.example {\n    forward . 1.1.1.1\n    {\n    }\n}\n",
        [
            "Corefile:3:5 - Unexpected '{' where a directive should start"
            " - a block must open on the same line as its directive",
            "    {",
            "    ^",
        ],
    ),
    (
        "a,\n  b, {\n}\n",
        [
            "Corefile:2:6 - Expected another address but had '{' - check for extra comma",
            "  b, {",
            "     ^",
        ],
    ),
    (
        '. {\n  log "never\n  closed\n}\n',
        [
            "Corefile:2:7 - Unterminated quoted string: missing closing '\"'",
            '  log "never',
            "      ^",
        ],
    ),
    (
        "\ufeff. {\r\n  import\r\n}\r\n",
        [
            "Corefile:2:3 - Wrong argument count or unexpected line ending after 'import'",
            "  import",
            "  ^",
        ],
    ),
]


@pytest.mark.parametrize(("text", "lines"), ERRORS)
def test_error_format(text: str, lines: list[str]) -> None:
    with pytest.raises(CorefileError) as info:
        parse_corefile(text, env={})
    assert str(info.value).splitlines() == lines
    err = info.value
    assert (err.file, err.line, err.column) == (
        "Corefile",
        int(lines[0].split(":")[1]),
        int(lines[0].split(":")[2].split(" ")[0]),
    )
