"""``timeouts { read D; write D; idle D; maxtcpqueries N }``, with CoreDNS's checks."""

from __future__ import annotations

from collections.abc import Sequence

from pycorefile import Directive, SetupError, check_args, parse_duration
from pycorefile.plugin import TcpTimeouts

MIN_TIMEOUT = 1.0
MAX_TIMEOUT = 24 * 3600.0
_DURATIONS = ("read", "write", "idle")


def parse_timeouts(directives: Sequence[Directive]) -> TcpTimeouts:
    """Every ``timeouts`` directive of a block; a later setting wins, as in CoreDNS."""
    timeouts: dict[str, float] = {}
    max_queries: int | None = None
    for d in directives:
        check_args(d, 0, 0)
        options = d.block or ()
        if not options:
            raise SetupError("timeouts block with no timeouts specified", d)
        for option in options:
            check_args(option, 1, 1)
            text = option.args[0]
            if option.name == "maxtcpqueries":
                max_queries = _max_queries(text, option)
            elif option.name in _DURATIONS:
                timeouts[option.name] = _timeout(text, option)
            else:
                raise SetupError(f"unknown option: '{option.name}'", option)
    return TcpTimeouts(
        read=timeouts.get("read"),
        write=timeouts.get("write"),
        idle=timeouts.get("idle"),
        max_queries=max_queries,
    )


def _timeout(text: str, option: Directive) -> float:
    """A duration between 1 second and 24 hours; a bare number is seconds (as CoreDNS)."""
    seconds = float(text) if text.isdigit() else parse_duration(text, option, 0)
    if not MIN_TIMEOUT <= seconds <= MAX_TIMEOUT:
        raise SetupError(
            f"timeout provided '{text}' needs to be between 1 second and 24 hours", option, 0
        )
    return seconds


def _max_queries(text: str, option: Directive) -> int:
    try:
        n = int(text)
    except ValueError:
        raise SetupError(f"invalid value for maxtcpqueries '{text}'", option, 0) from None
    if n == 0 or n < -1:
        raise SetupError(
            f"maxtcpqueries provided '{n}' needs to be -1 (unlimited) or a positive integer",
            option,
            0,
        )
    return n
