"""Environment substitution {$NAME} and {%NAME%} (corefile.md §4)."""

from __future__ import annotations

import pytest

from pycorefile.corefile import parse_corefile
from pycorefile.corefile._env import expand_env

from ._util import error, parse

ENV = {
    "PORT": "8080",
    "ADDRESS": "servername.com",
    "FOOBAR": "foobar",
    "PARTIAL_DIR": "r1",
    "SPACED": "a b  c",
    "X": "x",
    "NESTED": "{$FOOBAR}",
}

EXPANSIONS = [
    ("{$ADDRESS}", "servername.com"),
    ("di{$PARTIAL_DIR}", "dir1"),
    ("{$ADDRESS}:{$PORT}", "servername.com:8080"),
    ("{%ADDRESS%}:{$PORT}", "servername.com:8080"),
    ("{$ADDRESS}:{%PORT%}", "servername.com:8080"),
    ("{%ADDRESS%}/{%FOOBAR%}", "servername.com/foobar"),
    ("{{ .Name }} {$FOOBAR}", "{{ .Name }} foobar"),
    ("Test {$FOOBAR} test", "Test foobar test"),
    ("{$X}{$X}{$X}", "xxx"),
    # unset names give the empty string
    ("{$UNSET}", ""),
    ("a{%UNSET%}b", "ab"),
    (":{$PORT$}", ":"),
    ("{$VAR:-x}", ""),
    # malformed references stay literal; an empty name stops the scan
    ("{%ADDRESS}", "{%ADDRESS}"),
    ("{$}", "{$}"),
    ("{%}", "{%}"),
    ("{%%}", "{%%}"),
    ("{$ADDRESS", "{$ADDRESS"),
    ("{$X}{$}{$X}", "x{$}x"),
    ("{$}{$X}", "{$}{$X}"),
    # {%...%} first, then {$...}; a value is expanded again, as in CoreDNS
    ("{$NESTED}", "foobar"),
    ("no refs at all", "no refs at all"),
]


@pytest.mark.parametrize(("text", "expected"), EXPANSIONS)
def test_expand(text: str, expected: str) -> None:
    assert expand_env(text, ENV) == expected


def test_keys_and_every_token_are_substituted() -> None:
    text = '{$ADDRESS}:{$PORT} {\n  {$X}dir {$FOOBAR} "quoted {$X}" {\n    {$X} {%X%}\n  }\n}'
    assert parse(text, ENV) == [
        (
            ["servername.com:8080"],
            [("xdir", ["foobar", "quoted x"], [("x", ["x"])])],
        )
    ]


def test_a_value_with_spaces_stays_one_token() -> None:
    assert parse(". {\n  hosts {$SPACED} z\n}", ENV) == [(["."], [("hosts", ["a b  c", "z"])])]


def test_environment_defaults_to_the_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYCOREFILE_TEST_ZONE", "from-env.example")
    (block,) = parse_corefile("{$PYCOREFILE_TEST_ZONE} {\n}\n")
    assert block.keys == ("from-env.example",)


def test_substitution_happens_after_lexing() -> None:
    # a value holding braces, quotes or # is data, not syntax
    env = {"V": '} { "x" # y'}
    assert parse(". {\n  d {$V}\n}", env) == [(["."], [("d", ['} { "x" # y'])])]


def test_a_comma_from_the_environment_continues_the_key_list() -> None:
    assert parse("{$K}\nb {\n}", {"K": "a,"}) == [(["a", "b"], [])]


def test_a_value_referring_to_itself_is_an_error_not_a_hang() -> None:
    message = error(". {\n  d {$LOOP}\n}", {"LOOP": "x{$LOOP}"})
    assert message.startswith("Corefile:2:5 - environment substitution does not terminate")
