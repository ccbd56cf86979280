"""``loadbalance [round_robin | weighted FILE] { reload D; prefer CIDR... }``: pure parsing."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from pycorefile import Directive, SetupError, parse_duration

from ._reorder import Network

ROUND_ROBIN = "round_robin"
WEIGHTED = "weighted"
DEFAULT_RELOAD = 30.0
"""How often a weight file is checked for changes (CoreDNS's 30 s)."""


@dataclass(frozen=True)
class LoadbalanceConfig:
    """What a block's ``loadbalance`` asks for."""

    policy: str = ROUND_ROBIN
    weight_file: str = ""
    """``weighted`` only: the file of weights (relative to the working directory)."""
    reload: float = DEFAULT_RELOAD
    """``weighted`` only: seconds between checks of the weight file; 0 never."""
    prefer: tuple[Network, ...] = ()
    """Subnets whose addresses go first, in this order (``round_robin`` only)."""
    directive: Directive | None = None


def parse_loadbalance(directives: Sequence[Directive]) -> LoadbalanceConfig:
    """A block's ``loadbalance`` directives; as in CoreDNS a later policy replaces an
    earlier one, and ``prefer`` subnets add up (a ``weighted`` policy starts anew)."""
    config = LoadbalanceConfig()
    for d in directives:
        config = _parse_one(d, config)
    return config


def _parse_one(d: Directive, before: LoadbalanceConfig) -> LoadbalanceConfig:
    args = d.args
    options = d.block or ()
    if args and args[0] == WEIGHTED:
        if len(args) < 2:
            raise SetupError("missing weight file argument", d)
        if len(args) > 2:
            raise SetupError("unexpected argument(s)", d, 2)
        reload = DEFAULT_RELOAD
        for option in options:
            if option.name != "reload":
                raise SetupError(f"unknown property '{option.name}'", option)
            if not option.args:
                raise SetupError("reload duration value is missing", option)
            if len(option.args) > 1:
                raise SetupError("unexpected argument", option, 1)
            try:
                reload = parse_duration(option.args[0])
            except SetupError:
                raise SetupError(f"invalid reload duration '{option.args[0]}'", option, 0) from None
        return LoadbalanceConfig(WEIGHTED, args[1], reload, (), d)
    if args:
        if args[0] != ROUND_ROBIN:
            raise SetupError(f"unknown policy: {args[0]}", d, 0)
        if len(args) > 1:
            raise SetupError(f"unknown property for {args[0]}", d, 1)
    prefer = list(before.prefer)
    for option in options:
        if option.name != "prefer":
            raise SetupError(f"unknown property '{option.name}'", option)
        for index, text in enumerate(option.args):
            prefer.append(_cidr(text, option, index))
    return LoadbalanceConfig(ROUND_ROBIN, "", DEFAULT_RELOAD, tuple(prefer), d)


def _cidr(text: str, option: Directive, index: int) -> Network:
    """A CIDR as Go's ParseCIDR reads it: host bits allowed, the prefix length required."""
    if "/" not in text:
        raise SetupError(f'invalid CIDR "{text}": invalid CIDR address: {text}', option, index)
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise SetupError(
            f'invalid CIDR "{text}": invalid CIDR address: {text}', option, index
        ) from None
