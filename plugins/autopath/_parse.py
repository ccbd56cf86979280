"""From ``autopath [ZONE...] RESOLV-CONF`` to a frozen configuration (no sockets, no server)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import dns.exception
import dns.name

from pycorefile import Directive, SetupContext, SetupError, parse_zones


@dataclass(frozen=True)
class AutopathConfig:
    """What one ``autopath`` line asks for.

    Exactly one of ``search`` (read from a resolv.conf file at setup) and
    ``plugin`` (the block's plugin that supplies the search path at run time)
    is in use: ``plugin`` is None for a file.
    """

    zones: tuple[str, ...]
    source: str
    """The last argument as written: a resolv.conf path or ``@PLUGIN``."""
    search: tuple[str, ...] = ()
    """The search domains from the file: lowercased FQDNs (``ns1.svc.cluster.local.``)."""
    plugin: str | None = None


def parse_autopath(directives: Sequence[Directive], ctx: SetupContext) -> AutopathConfig:
    """Read the ``autopath`` directive of one server block."""
    d = directives[0]
    if not d.args:
        raise SetupError("no resolv-conf specified", d)
    for option in d.block or ():
        raise SetupError(f"unknown property '{option.name}'", option)
    last = len(d.args) - 1
    zones = tuple(parse_zones(d.args[:last], ctx, d, 0))
    source = d.args[last]
    if source.startswith("@"):
        name = source[1:]
        if not name:
            raise SetupError("expected a plugin name after '@' (e.g. @meshhosts)", d, last)
        if name == d.name:
            raise SetupError("autopath cannot take its search path from itself", d, last)
        if not any(other.name == name for other in ctx.block.directives):
            raise SetupError(
                f"plugin '{name}' is not in this server block: add it, or give a resolv.conf file",
                d,
                last,
            )
        return AutopathConfig(zones, source, (), name)
    try:
        with open(source, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError as exc:
        raise SetupError(f'failed to parse "{source}": {exc.strerror or exc}', d, last) from None
    try:
        search = normalize_search(resolv_conf_search(text))
    except ValueError as exc:
        raise SetupError(f'failed to parse "{source}": {exc}', d, last) from None
    return AutopathConfig(zones, source, search, None)


def resolv_conf_search(text: str) -> list[str]:
    """The search list of a resolv.conf text, as the C library reads it.

    The last ``search`` or ``domain`` line wins (``domain x`` is a search list
    of one); ``#`` and ``;`` start comment lines.
    """
    search: list[str] = []
    for line in text.splitlines():
        fields = line.split()
        if not fields or fields[0][0] in "#;":
            continue
        if fields[0] == "search":
            search = fields[1:]
        elif fields[0] == "domain":
            search = fields[1:2]
    return search


def normalize_search(domains: Iterable[str]) -> tuple[str, ...]:
    """Search domains lowercased and fully qualified, in order, without repeats or the root.

    Raises ValueError for a name that is not a domain name.
    """
    out: dict[str, None] = {}
    for text in domains:
        text = text.strip().lower()
        if text in ("", "."):
            continue
        try:
            name = dns.name.from_text(text).to_text()
        except dns.exception.DNSException as exc:
            raise ValueError(f"invalid search domain {text!r}: {exc}") from None
        out.setdefault(name, None)
    return tuple(out)
