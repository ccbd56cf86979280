"""The ``meshhosts`` directive: from Corefile lines to a frozen configuration (pure)."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from pycorefile import (
    Directive,
    Fallthrough,
    SetupContext,
    SetupError,
    check_args,
    parse_duration,
    parse_zones,
)

from ._sources import MAX_FILE_SIZE, normalize_host
from ._table import InlineEntry

DEFAULT_TTL = 30
DEFAULT_RELOAD = 5.0
DEFAULT_DOMAIN = "cluster.local."
DEFAULT_RESOLV_CONF = "/etc/resolv.conf"
_ONCE = ("namespace", "domain", "ttl", "reload", "fallthrough", "resolv_conf", "max_file_size")
_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}


@dataclass(frozen=True)
class MeshHostsConfig:
    """What one ``meshhosts`` block says."""

    zones: tuple[str, ...] = (".",)
    files: tuple[str, ...] = ()
    inline: tuple[InlineEntry, ...] = ()
    namespace: str = ""
    domain: str = DEFAULT_DOMAIN
    ttl: int = DEFAULT_TTL
    reload: float = DEFAULT_RELOAD
    fallthrough: Fallthrough | None = None
    resolv_conf: str = DEFAULT_RESOLV_CONF
    max_file_size: int = MAX_FILE_SIZE
    """Bytes one file may have; a bigger file is a failed load."""
    source: str = "Corefile"
    """Where the directive is (``FILE:LINE``), for log messages."""


def parse_meshhosts(directives: Sequence[Directive], ctx: SetupContext) -> MeshHostsConfig:
    """Read ``meshhosts [ZONES...] { ... }`` (once per server block)."""
    d = directives[0]
    zones = tuple(parse_zones(d.args, ctx, d))
    files: list[str] = []
    inline: list[InlineEntry] = []
    seen: set[str] = set()
    values: dict[str, object] = {}
    for opt in d.block or ():
        name = opt.name
        if name in _ONCE:
            if name in seen:
                raise SetupError(f"'{name}' given twice", opt)
            seen.add(name)
        address = _address(name)
        if address is not None:
            inline.append(_inline(opt, address))
        elif name == "file":
            check_args(opt, 1)
            files.extend(opt.args)
        elif name == "namespace":
            check_args(opt, 1, 1)
            namespace = opt.args[0].strip().lower()
            if (
                not namespace
                or len(namespace) > 63
                or not all(c.isascii() and (c.isalnum() or c == "-") for c in namespace)
            ):
                raise SetupError(f"invalid namespace {opt.args[0]!r}", opt, 0)
            values["namespace"] = namespace
        elif name == "domain":
            check_args(opt, 1, 1)
            try:
                values["domain"] = normalize_host(opt.args[0])
            except ValueError as exc:
                raise SetupError(f"invalid domain: {exc}", opt, 0) from None
        elif name == "ttl":
            check_args(opt, 1, 1)
            values["ttl"] = _ttl(opt)
        elif name == "reload":
            check_args(opt, 1, 1)
            values["reload"] = parse_duration(opt.args[0], opt, 0)
        elif name == "fallthrough":
            values["fallthrough"] = Fallthrough.parse(opt)
        elif name == "resolv_conf":
            check_args(opt, 1, 1)
            values["resolv_conf"] = opt.args[0]
        elif name == "max_file_size":
            check_args(opt, 1, 1)
            values["max_file_size"] = _size(opt)
        else:
            raise SetupError(f"unknown property '{name}'", opt)
    fallthrough = values.get("fallthrough")
    assert fallthrough is None or isinstance(fallthrough, Fallthrough)
    return MeshHostsConfig(
        zones=zones,
        files=tuple(files),
        inline=tuple(inline),
        namespace=str(values.get("namespace", "")),
        domain=str(values.get("domain", DEFAULT_DOMAIN)),
        ttl=int(values.get("ttl", DEFAULT_TTL)),  # type: ignore[call-overload]
        reload=float(values.get("reload", DEFAULT_RELOAD)),  # type: ignore[arg-type]
        fallthrough=fallthrough,
        resolv_conf=str(values.get("resolv_conf", DEFAULT_RESOLV_CONF)),
        max_file_size=int(values.get("max_file_size", MAX_FILE_SIZE)),  # type: ignore[call-overload]
        source=f"{d.file}:{d.line}",
    )


def _address(text: str) -> str | None:
    """The canonical address when an option name is an IP (an inline line), else None."""
    text = text.split("%", 1)[0]  # a zone index (fe80::1%eth0) is not part of the address
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def _inline(opt: Directive, address: str) -> InlineEntry:
    if not opt.args:
        raise SetupError(f"inline entry {opt.name} needs at least one name", opt)
    if opt.block is not None:
        raise SetupError("an inline entry takes no block", opt)
    names = []
    for i, arg in enumerate(opt.args):
        try:
            names.append(normalize_host(arg))
        except ValueError as exc:
            raise SetupError(str(exc), opt, i) from None
    return InlineEntry(address, tuple(names))


def _ttl(opt: Directive) -> int:
    try:
        ttl = int(opt.args[0])
    except ValueError:
        raise SetupError("ttl needs a number of seconds", opt, 0) from None
    if not 0 <= ttl <= 65535:
        raise SetupError("ttl provided is invalid (0 to 65535 seconds)", opt, 0)
    return ttl


def _size(opt: Directive) -> int:
    """``max_file_size``: bytes, or a number followed by K, M or G (1024, 1024², 1024³)."""
    text = opt.args[0].strip().upper().removesuffix("IB").removesuffix("B")
    unit = text[-1:] if text[-1:] in _SIZE_UNITS else ""
    number = text[: len(text) - len(unit)]
    if not (number.isascii() and number.isdigit() and len(number) <= 15) or int(number) <= 0:
        raise SetupError("max_file_size needs a positive size: BYTES, or with K, M or G", opt, 0)
    return int(number) * _SIZE_UNITS[unit]
