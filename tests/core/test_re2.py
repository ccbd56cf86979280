"""pycorefile.re2: Go (RE2) patterns match in Python what they match in Go, or are refused."""

from __future__ import annotations

import warnings

import pytest

from pycorefile.re2 import MAX_PATTERN_LENGTH, Re2Error, compile_re2, translate_re2


@pytest.mark.parametrize(
    ("pattern", "text", "matched"),
    [
        # The same in both.
        (
            r"(.*)-(us-west-1)\.example\.org",
            "ftp-us-west-1.example.org.",
            "ftp-us-west-1.example.org",
        ),
        (r"^ip-(?P<a>[0-9]*)[.]example[.]$", "ip-10.example.", "ip-10.example."),
        # Go's $ is the end of the text only (Python's also matches before a final newline).
        (r"^a\.$", "a.\n", None),
        (r"(?m)^a\.$", "a.\nb", "a."),
        (r"a\z", "a", "a"),
        # (?<name>...) is a named group in Go.
        (r"(?<host>[a-z]+)\.", "www.", "www."),
        # POSIX classes are ranges, not a nested set.
        (r"^[[:alpha:]]+$", "abc", "abc"),
        (r"^[[:digit:][:upper:]]+$", "A1", "A1"),
        # ASCII only, as Go's \d \w \s.
        (r"^\d+$", "١٢", None),
        (r"^\w+$", "é", None),
        (r"a\sb", "a\vb", None),
        # \Q...\E is literal text.
        (r"\Qa.b\E", "axb a.b", "a.b"),
        # Octal escapes and \x{...}.
        (r"\101", "A", "A"),
        (r"\x{41}", "A", "A"),
        # A brace that is not a repeat is literal.
        (r"a{,2}", "a{,2}", "a{,2}"),
        (r"a{2}", "aa", "aa"),
        # A [ inside a class is literal in Go (Python warns of a nested set to come).
        (r"[[a]+", "[a[", "[a["),
    ],
)
def test_matches_what_go_matches(pattern: str, text: str, matched: str | None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no FutureWarning: nothing means something else later
        compiled = compile_re2(pattern)
    found = compiled.search(text)
    assert (found.group(0) if found else None) == matched


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        (r"(?=a)", "look-around"),
        (r"(?!a)", "look-around"),
        (r"(?<=a)b", "look-around"),
        (r"(a)\1", "back-reference"),
        (r"(?P<x>a)(?P=x)", "back-reference"),
        (r"\pL", "Unicode class"),
        (r"\p{Greek}", "Unicode class"),
        (r"a{1001}", "invalid repeat count"),
        (r"a(?i)b", "flag group other than at the start"),
        (r"(?U)a+", "ungreedy"),
        (r"[[:^alpha:]]", "negated class"),
        (r"\Z", "escape \\Z"),
        (r"a++", "possessive"),
        (r"(?>a)", "(?>"),
        (r"(?#comment)", "(?#"),
        ("a\\", "trailing backslash"),
        (r"[a", "missing closing ]"),
        (r"\8", "back-reference"),
        ("a" * (MAX_PATTERN_LENGTH + 1), "too long"),
    ],
)
def test_refuses_what_cannot_be_translated(pattern: str, reason: str) -> None:
    with pytest.raises(Re2Error, match=None) as info:
        compile_re2(pattern)
    assert reason in str(info.value)


def test_invalid_patterns_are_refused_with_the_pattern_named() -> None:
    with pytest.raises(Re2Error, match=r"invalid regex '\(a': "):
        compile_re2("(a")


def test_translation_of_the_readme_patterns_is_unchanged_where_nothing_differs() -> None:
    pattern = r"^(?P<d>[0-9]*)[.](?P<c>[0-9]*)[.]in-addr[.]arpa[.]"
    assert translate_re2(pattern) == pattern
