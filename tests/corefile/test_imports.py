"""Snippets and import: files, globs, nesting, limits and cycles (corefile.md §5)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from pycorefile.corefile import CorefileError, _parser, load_corefile, parse_corefile

from ._util import error, parse, shape


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def load(root: Path, files: dict[str, str], main: str = "Corefile") -> list[Any]:
    write(root, files)
    return shape(load_corefile(str(root / main), env={}))


def load_error(root: Path, files: dict[str, str], main: str = "Corefile") -> CorefileError:
    write(root, files)
    with pytest.raises(CorefileError) as info:
        load_corefile(str(root / main), env={})
    return info.value


# ---- snippets

SNIPPETS: list[tuple[str, list[Any]]] = [
    (
        "(common) {\n  gzip foo\n  errors stderr\n}\nhttp://example.com {\n  import common\n}",
        [(["http://example.com"], [("gzip", ["foo"]), ("errors", ["stderr"])])],
    ),
    # a snippet on one line, and one used twice
    (
        "(s) { log }\na {\n  import s\n  whoami\n  import s\n}",
        [(["a"], [("log", []), ("whoami", []), ("log", [])])],
    ),
    # "{" may stand on the next line; empty keys around the name do not count
    ('(s)\n{\n  log\n}\n"" (t) "" {\n  x\n}\na {\n  import t\n}', [(["a"], [("x", [])])]),
    # snippets are only tokens: their lines get structure where they are imported
    (
        "(fwd) {\n  forward . 1.1.1.1 {\n    max_fails 3\n  }\n}\n. {\n  import fwd\n}",
        [(["."], [("forward", [".", "1.1.1.1"], [("max_fails", ["3"])])])],
    ),
    # inside a directive block
    (
        "(opts) {\n  max_fails 3\n  expire 10s\n}\n"
        ". {\n  forward . 1.1.1.1 {\n    import opts\n  }\n}",
        [(["."], [("forward", [".", "1.1.1.1"], [("max_fails", ["3"]), ("expire", ["10s"])])])],
    ),
    # a snippet may import another, defined before or after it
    (
        "(a) {\n  import b\n  log\n}\n(b) {\n  whoami\n}\n. {\n  import a\n}",
        [(["."], [("whoami", []), ("log", [])])],
    ),
    # keys from a snippet, at the start of a block or after a trailing comma
    ("(k) {\n  k.example\n}\nimport k\n{\n}", [(["k.example"], [])]),
    ("(k) {\n  k.example\n}\na,\nimport k\n{\n}", [(["a", "k.example"], [])]),
    # the snippet body is substituted where it is used
    ("(s) {\n  d {$X}\n}\n. {\n  import s\n}", [(["."], [("d", ["x"])])]),
    # import right after the server block's "{" is still an import, as in CoreDNS
    ("(s) {\n  log\n}\n. { import s\n}", [(["."], [("log", [])])]),
    # the snippet name may come from the environment
    ("({$N}) {\n  log\n}\n. {\n  import {$N}\n}", [(["."], [("log", [])])]),
    # snippets never become servers
    ("(s) {\n  log\n}", []),
]


@pytest.mark.parametrize(("text", "expected"), SNIPPETS)
def test_snippets(text: str, expected: list[Any]) -> None:
    assert parse(text, {"X": "x", "N": "named"}) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "(s) {\n  a\n}\n(s) {\n  b\n}",
            "Corefile:4:1 - redeclaration of previously declared snippet s (first declared at "
            "Corefile:1)",
        ),
        ("(s) {\n  import s\n}", "Corefile:2:3 - Import cycle: snippet s -> snippet s"),
        (
            "(a) {\n  import b\n}\n(b) {\n  import a\n}\n. {\n  import a\n}",
            "Corefile:5:10 - Import cycle: snippet a -> snippet b -> snippet a",
        ),
        ("(s)\nwhoami", "Corefile:2:1 - Syntax error: Unexpected token 'whoami', expecting '{'"),
        ("(s) x\n{\n}\n(t)\n}", "Corefile:5:1 - Syntax error: Unexpected token '}', expecting '{'"),
        ("(s)", "Corefile:1:1 - Syntax error: Unexpected EOF, expecting '{'"),
        (
            "(s) {\n  log\n",
            "Corefile:2:3 - Unexpected EOF - the '{' at Corefile:1:5 is never closed",
        ),
    ],
)
def test_snippet_errors(text: str, message: str) -> None:
    assert error(text) == message


def test_a_snippet_used_before_it_is_defined_is_a_file_import() -> None:
    assert error(". {\n  import s\n}\n(s) {\n  log\n}") == (
        "Corefile:2:10 - File to import not found: s"
    )


def test_a_self_importing_snippet_is_rejected_even_unused() -> None:
    with pytest.raises(CorefileError, match="Import cycle"):
        parse_corefile("(s) {\n  log\n  import s\n}\n", env={})


# ---- import statement syntax


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("import", "Corefile:1:1 - Wrong argument count or unexpected line ending after 'import'"),
        (". {\n  import\n  x\n}", "Corefile:2:3 - Wrong argument count or unexpected line ending"),
        ("import a b", "Corefile:1:10 - Import takes only one argument (glob pattern or file)"),
        ('import ""', "Corefile:1:8 - Import requires a non-empty filepath"),
        ("import {$UNSET}", "Corefile:1:8 - Import requires a non-empty filepath"),
        ("import a*b*", "Corefile:1:8 - Glob pattern may only contain one wildcard (*), but has "),
        ("import a??", "Corefile:1:8 - Glob pattern may only contain one wildcard (*), but has "),
        ("import [ab].conf", "Corefile:1:8 - Glob pattern may only contain one wildcard (*)"),
        ("import a[b", "Corefile:1:8 - Failed to use import pattern a[b: syntax error in pattern"),
        ("import a\\", "Corefile:1:8 - Failed to use import pattern a\\: syntax error in pattern"),
    ],
)
def test_import_statement_errors(text: str, message: str, tmp_path: Path) -> None:
    assert error(text, filename=str(tmp_path / "Corefile")).startswith(
        message.replace("Corefile:", f"{tmp_path}/Corefile:")
    )


def test_import_mid_line_is_an_argument() -> None:
    assert parse("a {\n  x import y\n}") == [(["a"], [("x", ["import", "y"])])]
    assert parse("a import {\n}") == [(["a", "import"], [])]
    # inside a directive block, only at the start of a line
    assert parse(". {\n  d { import x\n  }\n}") == [(["."], [("d", [], [("import", ["x"])])])]


def test_import_inside_a_snippet_body_is_kept_for_later(tmp_path: Path) -> None:
    # (the file does not exist: nothing is imported until the snippet is used)
    assert parse("(s) {\n  import nothere.conf\n}", filename=str(tmp_path / "Corefile")) == []


# ---- files and globs


def test_relative_imports_resolve_against_the_importing_file(tmp_path: Path) -> None:
    files = {
        "Corefile": ". {\n  import sub/inner\n}\n",
        "sub/inner": "cache 30\nimport ../leaf\n",
        "leaf": "forward . 1.1.1.1\n",
    }
    assert load(tmp_path, files) == [(["."], [("cache", ["30"]), ("forward", [".", "1.1.1.1"])])]


def test_imported_tokens_carry_their_absolute_path(tmp_path: Path) -> None:
    write(tmp_path, {"Corefile": "import z.conf\n", "z.conf": "z.example {\n  whoami\n}\n"})
    (block,) = load_corefile(str(tmp_path / "Corefile"), env={})
    assert (block.file, block.line) == (str(tmp_path / "z.conf"), 1)
    assert block.directives[0].file == str(tmp_path / "z.conf")


def test_relative_main_file_name_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, {"Corefile": ". {\n  import x.conf\n}\n", "x.conf": "log\n"})
    monkeypatch.chdir(tmp_path)
    (block,) = load_corefile("Corefile", env={})
    assert block.file == "Corefile"
    assert block.directives[0].file == str(tmp_path / "x.conf")


def test_glob_imports_in_sorted_order(tmp_path: Path) -> None:
    files = {
        "Corefile": "import conf.d/*.conf\n",
        "conf.d/b.conf": "b.example {\n}\n",
        "conf.d/a.conf": "a.example {\n}\n",
        "conf.d/.hidden.conf": "hidden.example {\n}\n",  # Go's glob matches dotfiles
        "conf.d/c.txt": "c.example {\n}\n",
    }
    assert [keys for keys, _ in load(tmp_path, files)] == [
        ["hidden.example"],
        ["a.example"],
        ["b.example"],
    ]


def test_glob_with_question_mark_and_wildcard_directory(tmp_path: Path) -> None:
    files = {
        "Corefile": "import zones-*/z?.conf\n",
        "zones-1/z1.conf": "one {\n}\n",
        "zones-2/z2.conf": "two {\n}\n",
        "zones-2/z10.conf": "ten {\n}\n",
    }
    assert [keys for keys, _ in load(tmp_path, files)] == [["one"], ["two"]]


def test_a_glob_matching_nothing_is_only_a_warning(
    tmp_path: Path, corefile_log: pytest.LogCaptureFixture
) -> None:
    assert load(tmp_path, {"Corefile": "import none/*\n. {\n}\n"}) == [(["."], [])]
    assert [(r.levelno, r.getMessage()) for r in corefile_log.records] == [
        (logging.WARNING, "No files matching import glob pattern: none/*")
    ]


def test_import_inside_a_directive_block(tmp_path: Path) -> None:
    files = {
        "Corefile": "localhost\ndir1\nproxy {\n  import opts\n  transparent\n}\n",
        "opts": "prop1 1\nprop2 2\n",
    }
    assert load(tmp_path, files) == [
        (
            ["localhost"],
            [
                ("dir1", []),
                ("proxy", [], [("prop1", ["1"]), ("prop2", ["2"]), ("transparent", [])]),
            ],
        )
    ]


def test_an_imported_file_may_open_a_block_the_importer_closes(tmp_path: Path) -> None:
    files = {"Corefile": "import head\n  whoami\n}\n", "head": "example.org {\n  log\n"}
    assert load(tmp_path, files) == [(["example.org"], [("log", []), ("whoami", [])])]


def test_snippets_cross_file_boundaries(tmp_path: Path) -> None:
    files = {
        "Corefile": "(main) {\n  log\n}\nimport defs\n. {\n  import main\n  import more\n}\n",
        "defs": "(more) {\n  errors\n}\n",
        "sub.conf": "",
    }
    assert load(tmp_path, files) == [(["."], [("log", []), ("errors", [])])]


def test_snippet_imports_resolve_files_against_the_snippet_file(tmp_path: Path) -> None:
    files = {
        "Corefile": "import sub/defs\n. {\n  import s\n}\n",
        "sub/defs": "(s) {\n  import leaf\n}\n",
        "sub/leaf": "whoami\n",
    }
    assert load(tmp_path, files) == [(["."], [("whoami", [])])]


def test_env_in_the_import_path(tmp_path: Path) -> None:
    write(tmp_path, {"Corefile": ". {\n  import {$CONF}\n}\n", "x.conf": "log\n"})
    blocks = load_corefile(str(tmp_path / "Corefile"), env={"CONF": "x.conf"})
    assert shape(blocks) == [(["."], [("log", [])])]


def test_import_after_the_last_line_ends_the_directive(tmp_path: Path) -> None:
    # the token after an import always starts a new line, even if the lines
    # recorded in a snippet would say otherwise
    files = {"Corefile": "(s) { log }\n. {\n  import s\n  whoami\n}\n"}
    assert load(tmp_path, files) == [(["."], [("log", []), ("whoami", [])])]


@pytest.mark.parametrize(
    ("files", "line_col", "message"),
    [
        (
            {"Corefile": ". {\n  import missing.conf\n}\n"},
            "2:10",
            "File to import not found: missing.conf",
        ),
        ({"Corefile": "import d\n", "d/x": ""}, "1:8", "Could not import {root}/d: is a directory"),
        (
            {"Corefile": "import /dev/null\n"},
            "1:8",
            "Could not import /dev/null: not a regular file",
        ),
        (
            {"Corefile": "import a\n", "a": "import b\n", "b": "import a\n"},
            None,
            "Import cycle: {root}/a -> {root}/b -> {root}/a",
        ),
        (
            {"Corefile": "import Corefile\n"},
            "1:8",
            "Import cycle: {root}/Corefile -> {root}/Corefile",
        ),
        ({"Corefile": "import *\n"}, "1:8", "Import cycle: {root}/Corefile -> {root}/Corefile"),
    ],
)
def test_file_import_errors(
    tmp_path: Path, files: dict[str, str], line_col: str | None, message: str
) -> None:
    err = load_error(tmp_path, files)
    root = str(tmp_path)
    assert err.message == message.format(root=root)
    if line_col is not None:
        assert f"{err.line}:{err.column}" == line_col
        assert err.file == f"{root}/Corefile"


def test_errors_inside_an_imported_file_name_that_file(tmp_path: Path) -> None:
    err = load_error(tmp_path, {"Corefile": "import bad\n", "bad": "x {\n  d }\n}\n"})
    assert str(err).splitlines() == [
        f"{tmp_path}/bad:2:5 - Unexpected '}}' because no matching opening brace"
        " - a closing '}' must be the first token on its line",
        "  d }",
        "    ^",
    ]


def test_lexer_errors_inside_an_imported_file_name_that_file(tmp_path: Path) -> None:
    err = load_error(tmp_path, {"Corefile": ". {\n  import bad\n}\n", "bad": 'log "open\n'})
    assert (err.file, err.line, err.column) == (f"{tmp_path}/bad", 1, 5)


def test_snippet_expansion_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_parser, "MAX_SNIPPET_EXPANSIONS", 3)
    text = "(s) {\n  log\n}\n. {\n" + "  import s\n" * 4 + "}\n"
    assert error(text) == "Corefile:8:10 - maximum snippet import depth (3) exceeded"


def test_file_expansion_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_parser, "MAX_FILE_EXPANSIONS", 2)
    files = {"Corefile": ". {\n" + "  import x*\n" * 3 + "}\n", "x1": "log\n", "x2": "log\n"}
    err = load_error(tmp_path, files)
    # a glob counts once, however many files it matches
    assert (err.line, err.message) == (4, "maximum file import depth (2) exceeded")


def test_a_symlink_loop_is_stopped_by_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_parser, "MAX_FILE_EXPANSIONS", 50)
    (tmp_path / "a").write_text("import b\n")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    err = load_error(tmp_path, {"Corefile": "import a\n"})
    assert "Import cycle" in err.message


def test_a_missing_main_file(tmp_path: Path) -> None:
    with pytest.raises(CorefileError) as info:
        load_corefile(str(tmp_path / "nope"))
    assert (
        str(info.value)
        == f"{tmp_path}/nope:0:0 - Could not read Corefile: No such file or directory"
    )


def test_a_key_list_left_open_by_an_empty_import(tmp_path: Path) -> None:
    err = load_error(tmp_path, {"Corefile": "a,\nimport none/*\n"})
    assert (err.line, err.column, err.message) == (2, 8, "Unexpected EOF")


def test_a_dangling_symlink(tmp_path: Path) -> None:
    (tmp_path / "link").symlink_to(tmp_path / "gone")
    err = load_error(tmp_path, {"Corefile": "import link\n"})
    assert err.message == f"Could not import {tmp_path}/link: No such file or directory"


def test_an_oversized_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pycorefile.corefile import _imports

    monkeypatch.setattr(_imports, "MAX_IMPORT_SIZE", 10)
    err = load_error(tmp_path, {"Corefile": "import big\n", "big": "x" * 11})
    assert err.message == f"Could not import {tmp_path}/big: larger than 10 bytes"
