"""``loop``: pure parsing."""

from __future__ import annotations

from pycorefile import Directive, check_args


def parse_loop(directive: Directive, zones: tuple[str, ...]) -> str:
    """The zone the probe is sent for: the server block's first (as CoreDNS's)."""
    check_args(directive, 0, 0)
    return zones[0] if zones else "."
