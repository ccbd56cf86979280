"""``autoalloc [IPV4-PREFIX] [IPV6-PREFIX] { state; hold; http; assign }``: the config."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass

from pycorefile import Directive, SetupError, check_args, parse_duration
from pycorefile.plugin import parse_http_address

from ._allocator import HASHED, SCHEMES, Pool

DEFAULT_IPV4 = "240.240.0.0/16"
DEFAULT_IPV6 = "2001:2::/48"
DEFAULT_HTTP = "localhost:9153"
DEFAULT_HOLD = 86400.0
"""A departed host's pair is reserved at least a day before another host may get it."""


@dataclass(frozen=True)
class AutoAllocConfig:
    pool: Pool
    state: str | None = None
    """Absolute path of the state file; None keeps allocations in memory only."""
    hold: float | None = DEFAULT_HOLD
    """Seconds a departed host's pair stays reserved; None: forever."""
    http: str = DEFAULT_HTTP
    scheme: str = HASHED
    """Where new hosts' pairs are searched for: ``hashed`` or ``sequential``."""


def parse_autoalloc(directives: Sequence[Directive]) -> AutoAllocConfig:
    """Turn the directive into a config; prefixes are told apart by their family."""
    d = directives[0]
    check_args(d, 0, 2)
    ipv4: ipaddress.IPv4Network | None = None
    ipv6: ipaddress.IPv6Network | None = None
    for i, text in enumerate(d.args):
        try:
            net = ipaddress.ip_network(text, strict=True)
        except ValueError as exc:
            raise SetupError(f"invalid prefix {text!r}: {exc}", d, i) from None
        if isinstance(net, ipaddress.IPv4Network):
            if ipv4 is not None:
                raise SetupError(f"two IPv4 prefixes: {ipv4} and {net}", d, i)
            if net.prefixlen > 30:
                raise SetupError(f"IPv4 prefix {net} is too small (at most /30)", d, i)
            ipv4 = net
        else:
            if ipv6 is not None:
                raise SetupError(f"two IPv6 prefixes: {ipv6} and {net}", d, i)
            if net.prefixlen > 127:
                raise SetupError(f"IPv6 prefix {net} is too small (at most /127)", d, i)
            ipv6 = net
    pool = Pool(
        ipv4 or ipaddress.IPv4Network(DEFAULT_IPV4), ipv6 or ipaddress.IPv6Network(DEFAULT_IPV6)
    )
    state: str | None = None
    hold: float | None = DEFAULT_HOLD
    http = DEFAULT_HTTP
    scheme = HASHED
    seen: set[str] = set()
    for option in d.block or ():
        if option.name not in ("state", "hold", "http", "assign"):
            raise SetupError(f"unknown property '{option.name}'", option)
        if option.name in seen:
            raise SetupError(f"'{option.name}' is given twice", option)
        seen.add(option.name)
        check_args(option, 1, 1)
        value = option.args[0]
        if option.name == "state":
            state = _state_path(option)
        elif option.name == "assign":
            if value not in SCHEMES:
                raise SetupError(
                    f"assign must be one of {', '.join(SCHEMES)}, not {value!r}", option, 0
                )
            scheme = value
        elif option.name == "hold":
            hold = None if value == "forever" else parse_duration(value, option, 0)
        else:
            http = parse_http_address(option, 0)
    return AutoAllocConfig(pool, state, hold, http, scheme)


def _state_path(option: Directive) -> str:
    """The state file as an absolute path; its directory must exist."""
    path = os.path.abspath(os.path.expanduser(option.args[0]))
    if os.path.isdir(path):
        raise SetupError(f"state {option.args[0]}: is a directory, not a file", option, 0)
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        raise SetupError(f"state {option.args[0]}: directory {directory} does not exist", option, 0)
    return path
