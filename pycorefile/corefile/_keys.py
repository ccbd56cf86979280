"""Server block keys: ``[scheme://]zone[:port]`` normalised as CoreDNS does.

Follows ``core/dnsserver/register.go`` and ``plugin/normalize.go``: a scheme
picks the transport and its default port, everything after the last colon is
the port if it is a number, the zone must pass miekg/dns's (liberal)
``IsDomainName``, and a CIDR becomes one or more reverse zones. Pure.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from ._model import CorefileError, ServerBlock, Token, ZoneKey

# Transport → default port. "dns" uses the -dns.port flag instead.
DEFAULT_PORTS = {"tls": 853, "quic": 853, "grpc": 443, "https": 443, "https3": 443}
TRANSPORTS = ("dns", *DEFAULT_PORTS)

_INT64_MAX = (1 << 63) - 1
_GO_INT = re.compile(r"[+-]?[0-9]+")
_CIDR_SHAPE = re.compile(r"[^/%]+/[0-9]+")
_RFC1035 = re.compile(r"(?:[a-zA-Z](?:[a-zA-Z0-9\-]*[a-zA-Z0-9])?\.)+")


class KeyProblem(ValueError):
    """A key that cannot be normalised; the message is user-facing."""


def is_fqdn(name: str) -> bool:
    """True if ``name`` ends with a dot that is not escaped (miekg/dns ``IsFqdn``)."""
    if not name.endswith("."):
        return False
    body = name[:-1]
    backslashes = len(body) - len(body.rstrip("\\"))
    return backslashes % 2 == 0


def fqdn(name: str) -> str:
    """``name`` with a trailing dot added if it lacks one."""
    return name if is_fqdn(name) else name + "."


def is_domain_name(name: str) -> bool:
    """miekg/dns ``IsDomainName``: labels of at most 63 octets, at most 255 in all.

    Almost any character is allowed, as in CoreDNS; empty labels are not, and
    neither is a leading dot (except for the root ``.``).
    """
    if name == "":
        return False
    data = fqdn(name).encode("utf-8", errors="surrogateescape")
    if data == b".":
        return True
    if data.startswith(b"."):
        return False
    offset = begin = 0
    was_dot = False
    i = 0
    while i < len(data):
        c = data[i]
        if c == 0x5C:  # backslash: \DDD or \X
            if i + 3 < len(data) and all(0x30 <= d <= 0x39 for d in data[i + 1 : i + 4]):
                i += 3
                begin += 3
            else:
                i += 1
                begin += 1
            was_dot = False
        elif c == 0x2E:  # dot
            if was_dot:
                return False
            was_dot = True
            label = i - begin
            if label >= 64:
                return False
            offset += 1 + label
            if offset > 256:
                return False
            begin = i + 1
        else:
            was_dot = False
        i += 1
    return True


def reverse_zones(text: str) -> list[str] | None:
    """The reverse zones of a CIDR, split on octet/nibble boundaries; None if not a CIDR."""
    if not _CIDR_SHAPE.fullmatch(text):
        return None
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None
    if text[0] == ":" or (text[0] == "0" and ":" in text):
        raise KeyProblem(f"invalid CIDR {text}")
    if isinstance(net, ipaddress.IPv4Network):
        step, suffix = 8, "in-addr.arpa."
    else:
        step, suffix = 4, "ip6.arpa."
    rounded = -(-net.prefixlen // step) * step
    zones: list[str] = []
    for sub in net.subnets(new_prefix=rounded):
        if isinstance(sub, ipaddress.IPv4Network):
            parts = [str(b) for b in sub.network_address.packed[: rounded // 8]]
        else:
            parts = list(sub.network_address.packed.hex()[: rounded // 4])
        zones.append(".".join([*reversed(parts), suffix]))
    return zones


def _split_host_port(text: str) -> tuple[list[str], int | None]:
    """Split ``zone[:port]`` into hosts (several for a split CIDR) and a port."""
    port: int | None = None
    colon = text.rfind(":")
    if colon != -1 and colon == len(text) - 1:
        raise KeyProblem(f"expecting data after last colon: {go_quote(text)}")
    if colon != -1:
        digits = text[colon + 1 :]
        if _GO_INT.fullmatch(digits) and abs(int(digits)) <= _INT64_MAX:
            port = int(digits)
            text = text[:colon]
    if len(text.encode("utf-8", errors="surrogateescape")) > 255:
        raise KeyProblem(f"specified zone is too long: {len(text)} > 255")
    if not is_domain_name(text):
        hint = " (empty zone; write .:PORT for the root zone)" if text == "" else ""
        raise KeyProblem(f"zone is not a valid domain name: {text}{hint}")
    hosts = reverse_zones(text)
    return (hosts if hosts is not None else [text]), port


def normalize_key(key: str, default_port: int = 53) -> list[ZoneKey]:
    """Normalise one key; a CIDR key can give several zones."""
    transport, sep, rest = key.partition("://")
    if sep:
        transport = transport.lower()
        if transport == "unix":
            raise KeyProblem(f"unix:// keys are not supported: {key}")
        if transport not in TRANSPORTS:
            raise KeyProblem(
                f"unknown scheme {transport!r} in {key} (expected one of {', '.join(TRANSPORTS)})"
            )
    else:
        transport, rest = "dns", key
    hosts, port = _split_host_port(rest)
    for host in hosts:
        # CoreDNS also checks the fully qualified form (it can fail where the bare one passed).
        if len(fqdn(host).encode("utf-8", errors="surrogateescape")) > 255:
            raise KeyProblem(f"specified zone is too long: {len(fqdn(host))} > 255")
        if not is_domain_name(fqdn(host)):
            raise KeyProblem(f"zone is not a valid domain name: {fqdn(host)}")
    if port is None:
        port = default_port if transport == "dns" else DEFAULT_PORTS[transport]
    elif not 0 <= port <= 65535:
        raise KeyProblem(f"invalid port {port} in {key}: must be between 0 and 65535")
    return [ZoneKey(transport, fqdn(host).lower(), port) for host in hosts]


def _key_token(block: ServerBlock, index: int) -> Token:
    """The token of key ``index`` (the block's position if tokens are missing)."""
    if index < len(block.key_tokens):
        return block.key_tokens[index]
    return Token(block.keys[index], block.file, block.line, block.column)


def _error_at(tok: Token, message: str) -> CorefileError:
    """A CorefileError pointing at a key."""
    return CorefileError(message, tok.file, tok.line, tok.column, tok.source_line)


def normalize_keys(block: ServerBlock, default_port: int = 53) -> list[ZoneKey]:
    """All zones a block serves, in key order (CIDR expansions in place).

    Raises CorefileError pointing at the offending key.
    """
    zones: list[ZoneKey] = []
    for index, key in enumerate(block.keys):
        try:
            zones.extend(normalize_key(key, default_port))
        except KeyProblem as err:
            raise _error_at(_key_token(block, index), str(err)) from None
    return zones


def find_duplicate_keys(blocks: Iterable[ServerBlock], default_port: int = 53) -> None:
    """Raise CorefileError if one transport, zone and port is served twice.

    Bind addresses and view filters are not considered here; the server core,
    which knows them, refines this check.
    """
    seen: dict[ZoneKey, Token] = {}
    for block in blocks:
        for index, key in enumerate(block.keys):
            tok = _key_token(block, index)
            try:
                zones = normalize_key(key, default_port)
            except KeyProblem as err:
                raise _error_at(tok, str(err)) from None
            for zone in zones:
                first = seen.get(zone)
                if first is not None:
                    raise _error_at(
                        tok,
                        f"cannot serve {zone} - it is already defined at {first.file}:{first.line}",
                    )
                seen[zone] = tok


def go_quote(text: str) -> str:
    """Quote like Go's ``%q`` (``strconv.Quote``)."""
    named = {
        "\a": "\\a",
        "\b": "\\b",
        "\f": "\\f",
        "\n": "\\n",
        "\r": "\\r",
        "\t": "\\t",
        "\v": "\\v",
        "\\": "\\\\",
        '"': '\\"',
    }
    out: list[str] = []
    for ch in text:
        code = ord(ch)
        if ch in named:
            out.append(named[ch])
        elif ch.isprintable() and not 0xD800 <= code <= 0xDFFF:
            out.append(ch)
        elif code < 0x80:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return '"' + "".join(out) + '"'


def zone_syntax_warning(zone: str) -> str | None:
    """The startup warning CoreDNS prints for a zone outside RFC 1035 preferred syntax.

    The root zone and reverse zones never warn; other zones must be fully
    qualified, with labels of letters, digits and hyphens that start with a
    letter and end with a letter or digit.
    """
    if zone == "." or zone.endswith(".in-addr.arpa.") or zone.endswith(".ip6.arpa."):
        return None
    if _RFC1035.fullmatch(zone):
        return None
    return f"Warning: Domain {go_quote(zone)} does not follow RFC1035 preferred syntax"
