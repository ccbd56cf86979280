"""Parsing in a child process gives what parsing in-process gives, errors included."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pycorefile.corefile import CorefileError, parse_corefile, parse_corefile_apart

CASES = {
    "blocks": ".:53 {\n  cache 30\n  forward . 127.0.0.1 {\n    max_fails 0\n  }\n}\n"
    "example.org:1053 {\n  whoami\n}\n",
    "snippet": "(common) {\n  log\n  errors\n}\n.:53 {\n  import common\n  whoami\n}\n",
    "env": ".:{$APART_PORT} {\n  whoami {$APART_ARG}\n}\n",
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_same_blocks_as_in_process(name: str) -> None:
    env = {"APART_PORT": "5353", "APART_ARG": "x"}
    text = CASES[name]
    assert parse_corefile_apart(text, "Corefile", env=env) == parse_corefile(
        text, "Corefile", env=env
    )


def test_imports_are_read_by_the_child(tmp_path: Path) -> None:
    (tmp_path / "extra.conf").write_text("log\nerrors\n")
    corefile = tmp_path / "Corefile"
    corefile.write_text(".:53 {\n  import extra.conf\n  whoami\n}\n")
    text = corefile.read_text()
    blocks = parse_corefile_apart(text, str(corefile))
    assert blocks == parse_corefile(text, str(corefile))
    assert [d.name for d in blocks[0].directives] == ["log", "errors", "whoami"]
    assert blocks[0].directives[0].file == str(tmp_path / "extra.conf")


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (".:53 {\n  cache {\n}\n", "X:3:1"),
        (".:53 {\n  whoami\n}\n}\n", "X:4:1"),
        (".:53 {\n  import missing.conf\n}\n", "X:2:10"),
    ],
)
def test_errors_come_back_whole(text: str, where: str) -> None:
    with pytest.raises(CorefileError) as in_process:
        parse_corefile(text, "X")
    with pytest.raises(CorefileError) as apart:
        parse_corefile_apart(text, "X")
    assert str(apart.value) == str(in_process.value)
    assert str(apart.value).startswith(where + " - ")
    assert (apart.value.file, apart.value.line, apart.value.column) == (
        in_process.value.file,
        in_process.value.line,
        in_process.value.column,
    )


def test_the_parent_never_imports_the_parser() -> None:
    code = (
        "import sys\n"
        "from pycorefile.corefile import parse_corefile_apart\n"
        "blocks = parse_corefile_apart('.:53 {\\n  whoami\\n}\\n')\n"
        "assert blocks[0].directives[0].name == 'whoami'\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'lark'\n"
        "             or m == 'pycorefile.corefile._parser'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"
