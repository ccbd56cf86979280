"""Environment substitution of ``{$NAME}`` and ``{%NAME%}`` inside a token.

Follows CoreDNS's ``replaceEnvVars``: ``{%...%}`` references are replaced
first, then ``{$...}``; unset names give the empty string; a malformed
reference stays literal and an empty name (``{$}``) stops the scan. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping

# CoreDNS re-scans the text after each replacement, so a value that contains
# a reference to itself loops forever there. We stop and report instead.
MAX_REPLACEMENTS = 1000
MAX_LENGTH = 1 << 20


class EnvExpansionError(ValueError):
    """Expansion did not terminate: a variable's value refers back to itself."""


def _replace_refs(text: str, start: str, end: str, env: Mapping[str, str]) -> str:
    """Replace every ``start NAME end`` reference, rescanning as CoreDNS does."""
    replacements = 0
    index = text.find(start)
    while index != -1:
        # CoreDNS searches for the end marker from the start of the reference.
        end_index = text.find(end, index)
        if end_index == -1:
            break
        if end_index <= index + len(start):
            return text  # empty name: the scan stops here
        ref = text[index : end_index + len(end)]
        name = ref[len(start) : -len(end)]
        text = text.replace(ref, env.get(name, ""))
        replacements += 1
        if replacements > MAX_REPLACEMENTS or len(text) > MAX_LENGTH:
            raise EnvExpansionError(
                f"environment substitution does not terminate (does a value refer to {ref}?)"
            )
        index = text.find(start)
    return text


def expand_env(text: str, env: Mapping[str, str]) -> str:
    """Substitute environment references in one token's text."""
    if "{" not in text:
        return text
    text = _replace_refs(text, "{%", "%}", env)
    return _replace_refs(text, "{$", "}", env)
