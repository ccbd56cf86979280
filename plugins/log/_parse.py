"""``log [NAMES...] [FORMAT] { class CLASSES... }`` to rules, as CoreDNS's log setup."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pycorefile import Directive, SetupError, check_args
from pycorefile.response import ReplyClass
from pycorefile.zones import ZoneError, normalize_zone

from ._format import COMMON_FORMAT, expand_format

_CLASSES = frozenset(ReplyClass)
"""The classes a ``class`` line may name (CoreDNS's ``response.ClassFromString``)."""


@dataclass(frozen=True)
class LogRule:
    """Names at or below ``zone`` are logged with ``format`` when their class is in ``classes``."""

    zone: str
    format: str
    classes: frozenset[str]


def parse_log(directives: Sequence[Directive]) -> tuple[LogRule, ...]:
    """Every ``log`` line of a block, in order; the first rule matching a name logs it."""
    rules: list[LogRule] = []
    for d in directives:
        args = list(d.args)
        fmt = COMMON_FORMAT
        if len(args) == 1 and "{" in args[0]:
            # CoreDNS would take it as a name and never log anything: say so instead.
            raise SetupError(
                f"a single argument is a name, not a format: write 'log . {args[0]}'", d, 0
            )
        if len(args) >= 2 and "{" in args[-1]:
            fmt = expand_format(args.pop())
        names = args or ["."]
        zones = []
        for i, name in enumerate(names):
            try:
                zones.append(normalize_zone(name))
            except ZoneError as exc:
                raise SetupError(str(exc), d, i) from None
        classes = _parse_classes(d)
        rules.extend(LogRule(zone, fmt, classes) for zone in zones)
    return tuple(rules)


def _parse_classes(d: Directive) -> frozenset[str]:
    found: set[str] = set()
    for option in d.block or ():
        if option.name != "class":
            raise SetupError(f"unknown property '{option.name}'", option)
        check_args(option, 1)
        for i, value in enumerate(option.args):
            if value not in _CLASSES:
                raise SetupError(f"invalid Class: {value}", option, i)
            found.add(value)
    return frozenset(found or {"all"})
