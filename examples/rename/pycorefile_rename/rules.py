"""What a ``rename`` line says: a pure parse function, no I/O.

``parse_rename`` turns the block's ``rename FROM TO`` lines into a
``RenameConfig``: one ``SuffixRename`` (from ``pycorefile.rename``, which
also renames the replies back) per line, the most specific first. Testable
without a server.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import dns.exception
import dns.name

from pycorefile import Directive, SetupError, check_args
from pycorefile.rename import SuffixRename


@dataclass(frozen=True)
class RenameConfig:
    """Every ``rename`` line of one server block, the most specific FROM first."""

    rules: tuple[SuffixRename, ...]

    def rule_for(self, name_wire: bytes) -> SuffixRename | None:
        """The rule for a lowercased wire name, or None when no FROM covers it."""
        for rule in self.rules:
            if rule.covers(name_wire):
                return rule
        return None


def parse_rename(directives: Sequence[Directive]) -> RenameConfig:
    """``rename FROM TO``, once or more per block; a mistake points at its argument."""
    rules: dict[dns.name.Name, SuffixRename] = {}
    for directive in directives:
        check_args(directive, 2, 2)
        if directive.block is not None:
            raise SetupError("rename takes no block", directive)
        source, target = _name(directive, 0), _name(directive, 1)
        if source == target:
            raise SetupError(f"{directive.args[0]} is renamed to itself", directive, 1)
        if source in rules:
            raise SetupError(
                f"{directive.args[0]} is already renamed to {rules[source].target}", directive, 0
            )
        rules[source] = SuffixRename(source, target)
    ordered = sorted(rules.values(), key=lambda rule: len(rule.source), reverse=True)
    return RenameConfig(tuple(ordered))


def _name(directive: Directive, index: int) -> dns.name.Name:
    text = directive.args[index]
    try:
        return dns.name.from_text(text).canonicalize()
    except dns.exception.DNSException as exc:
        raise SetupError(f"invalid domain name {text!r}: {exc}", directive, index) from None
