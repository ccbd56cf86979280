"""The ``hosts`` directive and the hosts file format: text in, plain values out (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import dns.exception
import dns.name

from pycorefile import (
    Directive,
    Fallthrough,
    SetupContext,
    SetupError,
    check_args,
    parse_duration,
    parse_zones,
)
from pycorefile.zones import host_address, in_zone

DEFAULT_FILE = "/etc/hosts"
DEFAULT_TTL = 3600
DEFAULT_RELOAD = 5.0
MAX_FILE_SIZE = 64 * 1024 * 1024
"""A hosts file bigger than this is refused (the last good table keeps serving)."""


@dataclass(frozen=True)
class HostsConfig:
    """What one ``hosts`` directive says."""

    path: str = DEFAULT_FILE
    origins: tuple[str, ...] = (".",)
    inline: tuple[str, ...] = ()
    """The inline lines, each as ``ADDRESS NAME...``."""
    ttl: int = DEFAULT_TTL
    reload: float = DEFAULT_RELOAD
    reverse: bool = True
    fallthrough: Fallthrough | None = None
    fallthrough_unsupported: bool = False


@dataclass
class HostsMap:
    """One source's entries (the file, or the inline lines), as CoreDNS's ``Map``.

    Names are lowercased FQDNs; addresses canonical text. ``wild4``/``wild6``
    hold the wildcard names (``*.example.org.``); ``reverse`` maps an address
    to the names that have it (never a wildcard name).
    """

    name4: dict[str, list[str]] = field(default_factory=dict)
    name6: dict[str, list[str]] = field(default_factory=dict)
    wild4: dict[str, list[str]] = field(default_factory=dict)
    wild6: dict[str, list[str]] = field(default_factory=dict)
    reverse: dict[str, list[str]] = field(default_factory=dict)

    def __len__(self) -> int:
        """Addresses of every name plus names of every address (``coredns_hosts_entries``)."""
        maps = (self.name4, self.name6, self.wild4, self.wild6, self.reverse)
        return sum(len(values) for m in maps for values in m.values())


def parse_hosts(directives: Sequence[Directive], ctx: SetupContext) -> HostsConfig:
    """Read ``hosts [FILE [ZONES...]] { ... }`` (once per server block)."""
    d = directives[0]
    path = d.args[0] if d.args else DEFAULT_FILE
    origins = tuple(parse_zones(d.args[1:], ctx, d, 1))
    inline: list[str] = []
    ttl = DEFAULT_TTL
    reload = DEFAULT_RELOAD
    reverse = True
    fallthrough: Fallthrough | None = None
    unsupported = False
    for opt in d.block or ():
        name = opt.name
        if name == "fallthrough":
            fallthrough = Fallthrough.parse(opt)
        elif name == "fallthrough_unsupported":
            check_args(opt, 0, 0)
            unsupported = True
        elif name == "no_reverse":
            reverse = False
        elif name == "ttl":
            ttl = _ttl(opt)
        elif name == "reload":
            reload = _reload(opt)
        elif fallthrough is None:
            # As CoreDNS: any other line before fallthrough is a hosts line.
            if opt.block is not None:
                raise SetupError("a hosts line takes no block", opt)
            inline.append(" ".join((name, *opt.args)))
        else:
            raise SetupError(f"unknown property '{name}'", opt)
    if unsupported and fallthrough is None:
        raise SetupError("fallthrough_unsupported requires fallthrough", d)
    return HostsConfig(
        path=path,
        origins=origins,
        inline=tuple(inline),
        ttl=ttl,
        reload=reload,
        reverse=reverse,
        fallthrough=fallthrough,
        fallthrough_unsupported=unsupported,
    )


def _ttl(opt: Directive) -> int:
    if not opt.args:
        raise SetupError("ttl needs a time in second", opt)
    try:
        ttl = int(opt.args[0])
    except ValueError:
        raise SetupError("ttl needs a number of second", opt, 0) from None
    if not 0 < ttl <= 65535:
        raise SetupError("ttl provided is invalid", opt, 0)
    return ttl


def _reload(opt: Directive) -> float:
    if len(opt.args) != 1:
        raise SetupError("reload needs a duration (zero seconds to disable)", opt)
    text = opt.args[0]
    if text.startswith("-"):
        try:
            parse_duration(text[1:], opt, 0)
        except SetupError:
            pass
        else:
            raise SetupError(f"invalid negative duration for reload '{text}'", opt, 0)
    try:
        return parse_duration(text, opt, 0)
    except SetupError:
        raise SetupError(f"invalid duration for reload '{text}'", opt, 0) from None


# -- The hosts file format ------------------------------------------------------------


def parse_address(text: str) -> tuple[str, bool] | None:
    """``(canonical address, is IPv4)``, or None when ``text`` is no address
    (``pycorefile.zones.host_address``: ``%zone`` dropped, IPv4-mapped is IPv4)."""
    ip = host_address(text)
    return None if ip is None else (str(ip), ip.version == 4)


def normalize_name(text: str) -> str | None:
    """A host name as the table keys it: lowercased FQDN; None when it is no DNS name."""
    try:
        name = dns.name.from_text(text.lower())
    except (dns.exception.DNSException, UnicodeError, ValueError):
        return None
    return str(name.to_text())


def parse_hosts_text(
    lines: Iterable[str], origins: Sequence[str], reverse: bool = True
) -> HostsMap:
    """Read hosts file lines (``ADDRESS NAME...``, ``#`` comments) into a ``HostsMap``.

    As CoreDNS: a line with fewer than two fields, or whose first field is no
    address, is skipped; names outside ``origins`` are dropped; a ``*.`` name
    is a wildcard (no PTR). Unlike CoreDNS, a name that is not a DNS name is
    skipped and an address repeated for one name is kept once.
    """
    out = HostsMap()
    for raw in lines:
        line = raw.split("#", 1)[0]
        fields = line.split()
        if len(fields) < 2:
            continue
        parsed = parse_address(fields[0])
        if parsed is None:
            continue
        address, v4 = parsed
        for field_text in fields[1:]:
            name = normalize_name(field_text)
            if name is None or not any(in_zone(name, origin) for origin in origins):
                continue
            wildcard = name.startswith("*.")
            by_family = (out.wild4, out.wild6) if wildcard else (out.name4, out.name6)
            table = by_family[0] if v4 else by_family[1]
            addresses = table.setdefault(name, [])
            if address not in addresses:
                addresses.append(address)
            if reverse and not wildcard:
                names = out.reverse.setdefault(address, [])
                if name not in names:
                    names.append(name)
    return out
