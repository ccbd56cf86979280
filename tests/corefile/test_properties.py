"""Property tests: rendered models parse back; arbitrary text only raises CorefileError."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pycorefile.corefile import (
    CorefileError,
    blocks_to_json,
    find_duplicate_keys,
    normalize_keys,
    parse_corefile,
    zone_syntax_warning,
)
from pycorefile.corefile._lexer import GO_SPACE

from ._util import shape

# ---- generated model → Corefile text → parsed model

# Words mix plain text with every character the lexer treats specially.
_CHARS = st.sampled_from(list('ab.-_:,()/*"#\\ \t\n{}$%\u00a0\u2028é'))
_WORD = st.text(_CHARS, max_size=8) | st.text(st.characters(exclude_categories=["Cs"]), max_size=5)


def _representable(word: str) -> bool:
    """Whether some Corefile spelling lexes back to exactly ``word``."""
    if word in ("{", "}") or "{$" in word or "{%" in word or "\r" in word or "\ufeff" in word:
        return False
    if _needs_quotes(word):
        # inside quotes, a backslash right before a quote (or at the end) escapes it
        return '\\"' not in word and not word.endswith("\\")
    return True


def _needs_quotes(word: str) -> bool:
    return word == "" or word.startswith('"') or "#" in word or any(c in GO_SPACE for c in word)


def render_word(word: str) -> str:
    if not _needs_quotes(word):
        return word
    return '"' + word.replace('"', '\\"') + '"'


words = _WORD.filter(_representable)
names = words.filter(lambda w: w != "import")
keys = words.filter(
    lambda w: (
        w not in ("", "import")
        and not w.endswith(",")
        and not (w.startswith("(") and w.endswith(")"))
    )
)


def directives(depth: int) -> st.SearchStrategy[Any]:
    leaf = st.tuples(names, st.lists(words, max_size=3))
    if depth == 0:
        return leaf
    nested = st.tuples(
        names, st.lists(words, max_size=3), st.lists(directives(depth - 1), max_size=3)
    )
    return leaf | nested


blocks = st.lists(
    st.tuples(st.lists(keys, min_size=1, max_size=3), st.lists(directives(2), max_size=4)),
    max_size=3,
)


def render_directive(d: Any, indent: str) -> str:
    line = indent + " ".join(render_word(w) for w in [d[0], *d[1]])
    if len(d) == 2:
        return line + "\n"
    inner = "".join(render_directive(n, indent + "  ") for n in d[2])
    return f"{line} {{\n{inner}{indent}}}\n"


def render(model: list[Any]) -> str:
    out = []
    for block_keys, dirs in model:
        head = " ".join(render_word(k) for k in block_keys)
        out.append(head + " {\n" + "".join(render_directive(d, "  ") for d in dirs) + "}\n")
    return "".join(out)


def _as_lists(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_as_lists(v) for v in value]
    return value


@settings(max_examples=200, deadline=None)
@given(blocks)
def test_rendered_model_parses_back(model: list[Any]) -> None:
    text = render(model)
    assert _as_lists(shape(parse_corefile(text, env={}))) == _as_lists(model)


@settings(max_examples=50, deadline=None)
@given(blocks)
def test_crlf_rendering_parses_the_same(model: list[Any]) -> None:
    assume(not any("\n" in w for w in json.dumps(model)))
    text = render(model)
    assert shape(parse_corefile(text.replace("\n", "\r\n"), env={})) == shape(
        parse_corefile(text, env={})
    )


# ---- bounded fuzzing: arbitrary text never escapes as anything but CorefileError

# fmt: off
FRAGMENTS = st.sampled_from(
    [
        "{", "}", " { ", " } ", "\n", "\r\n", " ", "\t", "#", '"', '\\"', "\\", ",", ", ",
        "import ", "import", "(s)", "(s) ", ".", ".:53", "a", "example.org", "dns://", "tls://",
        "10.0.0.0/15", "2001:db8::/29", ":", "{$X}", "{$B}", "{%X%}", "{$", "%}", "*", "?", "[",
        "]", "..", "/", "import (s)", "import *", "import nowhere", "whoami", "\ufeff", "\x00",
        "\u2028", "é",
    ]
)
# fmt: on
TEXTS = st.lists(FRAGMENTS, max_size=40).map("".join) | st.text(max_size=80)


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(TEXTS)
def test_fuzz_only_corefile_errors(fuzz_dir: Path, text: str) -> None:
    env = {"X": "x y", "B": "{"}
    try:
        blocks = parse_corefile(text, str(fuzz_dir / "Corefile"), env=env)
    except CorefileError as err:
        assert err.line >= 0 and err.column >= 0
        str(err)
        return
    json.dumps(blocks_to_json(blocks))
    for block in blocks:
        try:
            for zone in normalize_keys(block):
                zone_syntax_warning(zone.zone)
        except CorefileError as err:
            str(err)
    try:
        find_duplicate_keys(blocks)
    except CorefileError as err:
        str(err)
