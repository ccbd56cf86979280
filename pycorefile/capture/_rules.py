"""The capture rules as pure functions of the options: nftables scripts, iptables-restore
input, and readers of what is installed. No subprocess and no file access here, so every
rule can be unit-tested."""

from __future__ import annotations

import ipaddress
import json
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_PORT = 15053
DNS_PORT = 53
TABLE = "pycorefile"
NFT_CHAIN = "output"
# Before the usual dstnat priority (-100, where iptables' nat OUTPUT also sits): the first
# NAT binding of a connection wins, so capture must come before other redirects of port 53
# (for example a container runtime's embedded DNS); pycorefile's own queries, which capture
# skips, still meet those rules.
NFT_PRIORITY = -110
IPT_CHAIN = "PYCOREFILE_OUTPUT"
IPT_JUMP = f"-A OUTPUT -j {IPT_CHAIN}"
PROTOCOLS = ("udp", "tcp")


class CaptureError(Exception):
    """A capture command cannot do what was asked; the message is for the operator."""


@dataclass(frozen=True)
class CaptureOptions:
    """What ``capture install`` sets up.

    ``destinations`` None captures port 53 to every address; otherwise only to those
    addresses (the resolv.conf name servers). ``ipv6`` False leaves IPv6 traffic alone.
    """

    port: int = DEFAULT_PORT
    exclude_uids: tuple[int, ...] = ()
    exclude_gids: tuple[int, ...] = ()
    destinations: tuple[IPAddress, ...] | None = None
    ipv6: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.port <= 65535:
            raise CaptureError(f"port {self.port} is not between 1 and 65535")
        if not self.exclude_uids and not self.exclude_gids:
            raise CaptureError(
                "name the user or group pycorefile runs as (--user, --uid or --gid): "
                "without that exclusion pycorefile's own upstream queries to port 53 "
                "would be captured and loop back to itself"
            )
        for ident in (*self.exclude_uids, *self.exclude_gids):
            if not 0 <= ident < 2**32 - 1:
                raise CaptureError(f"user or group id {ident} is out of range")
        if self.destinations is not None and not self.destinations:
            raise CaptureError("no name server addresses to capture")

    @property
    def uids(self) -> tuple[int, ...]:
        """Excluded user ids, sorted and without repeats (so the rules are canonical)."""
        return tuple(sorted(set(self.exclude_uids)))

    @property
    def gids(self) -> tuple[int, ...]:
        """Excluded group ids, sorted and without repeats."""
        return tuple(sorted(set(self.exclude_gids)))

    def targets(self, version: int) -> tuple[IPAddress, ...] | None:
        """Destinations of one IP version: None for all, () when that version is not captured."""
        if version == 6 and not self.ipv6:
            return ()
        if self.destinations is None:
            return None
        return tuple(sorted({a for a in self.destinations if a.version == version}, key=int))

    @property
    def nft_family(self) -> str:
        """``inet`` covers IPv4 and IPv6 in one table; ``ip`` when IPv6 is left alone."""
        return "inet" if self.ipv6 else "ip"


# --- resolv.conf ---------------------------------------------------------------------------


def parse_resolv_conf(text: str, filename: str = "resolv.conf") -> tuple[IPAddress, ...]:
    """The ``nameserver`` addresses of a resolv.conf, in order, without repeats.

    A zone index (``fe80::1%eth0``) is dropped: the redirect matches the address only.
    """
    found: list[IPAddress] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = re.split(r"[#;]", raw, maxsplit=1)[0].split()
        if len(line) < 2 or line[0] != "nameserver":
            continue
        try:
            address = ipaddress.ip_address(line[1].split("%", 1)[0])
        except ValueError:
            raise CaptureError(
                f"{filename}:{lineno}: nameserver {line[1]!r} is not an IP address"
            ) from None
        if address not in found:
            found.append(address)
    if not found:
        raise CaptureError(f"{filename}: no nameserver lines, so nothing to capture")
    return tuple(found)


def install_warnings(
    options: CaptureOptions, local_resolvers: Sequence[IPAddress] = ()
) -> list[str]:
    """Setups that install fine but will not behave as the operator probably expects.

    ``local_resolvers`` are the resolv.conf name servers on this host that something
    listens on at port 53 (systemd-resolved's 127.0.0.53, a local dnsmasq...).
    """
    warnings: list[str] = []
    if 0 in options.exclude_uids:
        warnings.append(
            "uid 0 is excluded: every process running as root bypasses capture; run "
            "pycorefile as a dedicated user and exclude that one"
        )
    if 0 in options.exclude_gids:
        warnings.append("gid 0 is excluded: every process of group root bypasses capture")
    if local_resolvers and options.destinations is None:
        shown = ", ".join(str(a) for a in local_resolvers)
        warnings.append(
            f"resolv.conf names a local resolver ({shown}). Its own upstream queries to "
            "port 53 are captured too, so if pycorefile forwards to it the queries loop. "
            "Forward pycorefile to the real upstream servers (on systemd-resolved hosts "
            "/run/systemd/resolve/resolv.conf), or also exclude the local resolver's "
            "user (another --user), or capture with --only-resolv-conf."
        )
    return warnings


# --- nftables ------------------------------------------------------------------------------


def _nft_set(values: Iterable[object]) -> str:
    items = [str(v) for v in values]
    return items[0] if len(items) == 1 else "{ " + ", ".join(items) + " }"


def nft_rules(options: CaptureOptions) -> list[str]:
    """The rules of the capture chain, in order: exclusions first, then the redirects."""
    rules: list[str] = []
    if options.uids:
        rules.append(f"meta skuid {_nft_set(options.uids)} return")
    if options.gids:
        rules.append(f"meta skgid {_nft_set(options.gids)} return")
    for version, proto_key, nfproto in ((4, "ip", "ipv4"), (6, "ip6", "ipv6")):
        targets = options.targets(version)
        if targets == ():
            continue
        if targets is None:
            # In an ip-family table every packet is IPv4; no family test needed.
            match = f"meta nfproto {nfproto} " if options.nft_family == "inet" else ""
        else:
            match = f"{proto_key} daddr {_nft_set(targets)} "
        for proto in PROTOCOLS:
            rules.append(f"{match}{proto} dport {DNS_PORT} counter redirect to :{options.port}")
    return rules


def nft_table(options: CaptureOptions) -> str:
    """The capture table as nft syntax (what ``nft list table`` shows, without counters)."""
    body = "\n".join(f"\t\t{rule}" for rule in nft_rules(options))
    return (
        f"table {options.nft_family} {TABLE} {{\n"
        f"\tchain {NFT_CHAIN} {{\n"
        f"\t\ttype nat hook output priority {NFT_PRIORITY}; policy accept;\n"
        f"{body}\n"
        "\t}\n"
        "}\n"
    )


def _drop_table(family: str) -> str:
    # Declaring the table first makes the delete valid whether or not it exists; both run in
    # one transaction, so the net effect is "gone", with no window and no error.
    return f"table {family} {TABLE}\ndelete table {family} {TABLE}\n"


def nft_install_script(options: CaptureOptions) -> str:
    """An ``nft -f`` script that atomically replaces any earlier capture table with this one.

    Applying it twice leaves exactly the same ruleset (only the counters start again).
    """
    return _drop_table("inet") + _drop_table("ip") + nft_table(options)


def nft_remove_script() -> str:
    """An ``nft -f`` script deleting the capture table of either family, and nothing else."""
    return _drop_table("inet") + _drop_table("ip")


@dataclass(frozen=True)
class Redirect:
    """One installed redirect rule."""

    version: int  # 4 or 6
    protocol: str  # udp or tcp
    destinations: tuple[str, ...] | None  # None: every destination
    port: int
    packets: int | None  # connections redirected so far, when the rule counts them


@dataclass(frozen=True)
class Installed:
    """What a capture backend has in place, read back from the kernel."""

    backend: str
    where: str  # "table inet pycorefile", "nat chain PYCOREFILE_OUTPUT", ...
    redirects: tuple[Redirect, ...]
    uids: tuple[int, ...]
    gids: tuple[int, ...]
    rules_text: str = ""
    notes: tuple[str, ...] = field(default=())

    @property
    def ports(self) -> tuple[int, ...]:
        """The local ports captured traffic is sent to (one, unless the rules were edited)."""
        return tuple(sorted({r.port for r in self.redirects}))

    @property
    def versions(self) -> tuple[int, ...]:
        """The IP versions that are captured."""
        return tuple(sorted({r.version for r in self.redirects}))


def _ids(value: Any) -> list[int]:
    # nft and iptables-save print user and group ids as numbers.
    if isinstance(value, dict) and "set" in value:
        return [i for v in value["set"] for i in _ids(v)]
    if isinstance(value, int):
        return [value]
    if isinstance(value, str) and value.isdigit():
        return [int(value)]
    return []


def _addresses(value: Any) -> tuple[str, ...]:
    if isinstance(value, dict) and "set" in value:
        return tuple(a for v in value["set"] for a in _addresses(v))
    if isinstance(value, dict) and "prefix" in value:
        prefix = value["prefix"]
        return (f"{prefix['addr']}/{prefix['len']}",)
    return (str(value),)


def parse_nft_json(text: str, rules_text: str = "") -> Installed | None:
    """Read ``nft -j list table FAMILY pycorefile`` output; None when it holds no table."""
    data = json.loads(text).get("nftables", [])
    tables = [item["table"] for item in data if "table" in item]
    if not tables:
        return None
    family = str(tables[0].get("family", "inet"))
    redirects: list[Redirect] = []
    uids: list[int] = []
    gids: list[int] = []
    for item in data:
        rule = item.get("rule")
        if not rule:
            continue
        version: int | None = 4 if family == "ip" else None
        protocol = ""
        destinations: tuple[str, ...] | None = None
        packets: int | None = None
        port: int | None = None
        for expr in rule.get("expr", []):
            match = expr.get("match")
            if match:
                left, right = match.get("left", {}), match.get("right")
                meta = left.get("meta", {}).get("key") if isinstance(left, dict) else None
                payload = left.get("payload", {}) if isinstance(left, dict) else {}
                if meta == "skuid":
                    uids.extend(_ids(right))
                elif meta == "skgid":
                    gids.extend(_ids(right))
                elif meta == "nfproto":
                    version = 6 if right == "ipv6" else 4
                elif meta == "l4proto" and isinstance(right, str):
                    protocol = right
                elif payload.get("field") == "daddr":
                    version = 6 if payload.get("protocol") == "ip6" else 4
                    destinations = _addresses(right)
                elif payload.get("field") == "dport":
                    protocol = str(payload.get("protocol", ""))
            elif "counter" in expr and isinstance(expr["counter"], dict):
                packets = int(expr["counter"].get("packets", 0))
            elif "redirect" in expr:
                redirect = expr["redirect"] or {}
                port = int(redirect.get("port", 0)) if isinstance(redirect, dict) else 0
        if port is not None:
            versions = (version,) if version is not None else (4, 6)
            for v in versions:
                redirects.append(Redirect(v, protocol, destinations, port, packets))
    return Installed(
        backend="nft",
        where=f"nftables table {family} {TABLE}",
        redirects=tuple(redirects),
        uids=tuple(sorted(set(uids))),
        gids=tuple(sorted(set(gids))),
        rules_text=rules_text,
    )


# --- iptables ------------------------------------------------------------------------------


def iptables_rules(options: CaptureOptions, version: int) -> list[str]:
    """The ``-A`` lines of the capture chain for ``iptables`` (4) or ``ip6tables`` (6)."""
    rules = [f"-A {IPT_CHAIN} -m owner --uid-owner {uid} -j RETURN" for uid in options.uids]
    rules += [f"-A {IPT_CHAIN} -m owner --gid-owner {gid} -j RETURN" for gid in options.gids]
    targets = options.targets(version)
    if targets == ():
        return []
    width = 32 if version == 4 else 128
    destinations = [""] if targets is None else [f" -d {a}/{width}" for a in targets]
    for destination in destinations:
        for proto in PROTOCOLS:
            rules.append(
                f"-A {IPT_CHAIN}{destination} -p {proto} -m {proto} --dport {DNS_PORT} "
                f"-j REDIRECT --to-ports {options.port}"
            )
    return rules


def nat_section(save_text: str) -> list[str] | None:
    """The lines of the ``*nat`` table in ``iptables-save`` output; None when it has none."""
    lines: list[str] | None = None
    for raw in save_text.splitlines():
        line = raw.strip()
        if line == "*nat":
            lines = []
        elif lines is not None:
            if line == "COMMIT":
                return lines
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def _strip_counters(line: str) -> str:
    # iptables-save -c prefixes rules with [packets:bytes]
    return re.sub(r"^\[\d+:\d+\]\s*", "", line)


def jump_rules(save_text: str) -> list[str]:
    """The ``-A OUTPUT ... -j PYCOREFILE_OUTPUT`` lines present, exactly as saved."""
    section = nat_section(save_text) or []
    found = []
    for raw in section:
        line = _strip_counters(raw)
        if line.startswith("-A OUTPUT ") and line.split()[-2:] == ["-j", IPT_CHAIN]:
            found.append(line)
    return found


def has_chain(save_text: str) -> bool:
    """Whether the nat table declares the capture chain."""
    return any(line.startswith(f":{IPT_CHAIN} ") for line in nat_section(save_text) or [])


def iptables_install_input(options: CaptureOptions, version: int, save_text: str) -> str:
    """``iptables-restore --noflush`` input installing the capture chain, given what is there.

    The chain is declared if new, flushed and filled; the jump is inserted first in OUTPUT
    only when there is not exactly one already, so running it again changes nothing.
    """
    lines = ["*nat"]
    if not has_chain(save_text):
        lines.append(f":{IPT_CHAIN} - [0:0]")
    lines.append(f"-F {IPT_CHAIN}")
    lines += iptables_rules(options, version)
    jumps = jump_rules(save_text)
    if jumps != [IPT_JUMP]:
        # Missing, repeated or altered: put back exactly one plain jump, first in OUTPUT.
        lines += ["-D" + jump[2:] for jump in jumps]
        lines.append(f"-I OUTPUT 1 -j {IPT_CHAIN}")
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def iptables_remove_input(save_text: str) -> str | None:
    """``iptables-restore --noflush`` input removing every jump and the chain; None if absent."""
    jumps = jump_rules(save_text)
    chain = has_chain(save_text)
    if not jumps and not chain:
        return None
    lines = ["*nat", *("-D" + jump[2:] for jump in jumps)]
    if chain:
        lines += [f"-F {IPT_CHAIN}", f"-X {IPT_CHAIN}"]
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def nat_is_empty(save_text: str) -> bool:
    """Whether the nat table holds no rules and no user chains, with ACCEPT policies."""
    section = nat_section(save_text)
    if section is None:
        return True
    for line in section:
        if line.startswith("-A"):
            return False
        if line.startswith(":") and line.split()[1] != "ACCEPT":
            return False
    return True


def normalize_save(save_text: str) -> str:
    """``iptables-save`` output without its timestamp comments and counters, for comparing."""
    lines = []
    for raw in save_text.splitlines():
        if raw.startswith("#"):
            continue
        line = re.sub(r" \[\d+:\d+\]$", " [0:0]", _strip_counters(raw))
        lines.append(line)
    return "\n".join(lines) + ("\n" if lines else "")


_REDIRECT = re.compile(
    r"^-A " + IPT_CHAIN + r"(?: -d (?P<dest>\S+))? -p (?P<proto>\w+)"
    r".* --dport 53 -j REDIRECT --to-ports (?P<port>\d+)"
)
_OWNER = re.compile(r"^-A " + IPT_CHAIN + r" -m owner --(?P<kind>uid|gid)-owner (?P<id>\S+)")


def parse_iptables_save(save_text: str, version: int) -> Installed | None:
    """Read the capture chain from ``iptables-save -c -t nat`` output; None when absent."""
    if not has_chain(save_text) and not jump_rules(save_text):
        return None
    redirects: list[Redirect] = []
    ids: dict[str, list[int]] = {"uid": [], "gid": []}
    shown = []
    for raw in nat_section(save_text) or []:
        counters = re.match(r"^\[(\d+):\d+\]\s*", raw)
        line = _strip_counters(raw)
        if IPT_CHAIN not in line:
            continue
        shown.append(line)
        owner = _OWNER.match(line)
        if owner:
            ids[owner["kind"]].extend(_ids(owner["id"]))
            continue
        redirect = _REDIRECT.match(line)
        if redirect:
            dest = redirect["dest"]
            if dest:
                width = "/32" if version == 4 else "/128"
                dest = dest.removesuffix(width)
            redirects.append(
                Redirect(
                    version,
                    redirect["proto"],
                    (dest,) if dest else None,
                    int(redirect["port"]),
                    int(counters[1]) if counters else None,
                )
            )
    notes: list[str] = []
    if not jump_rules(save_text):
        notes.append(f"chain {IPT_CHAIN} exists but OUTPUT does not jump to it")
        redirects = []
    tool = "iptables" if version == 4 else "ip6tables"
    return Installed(
        backend="iptables",
        where=f"{tool} nat chain {IPT_CHAIN}",
        redirects=tuple(redirects),
        uids=tuple(sorted(set(ids["uid"]))),
        gids=tuple(sorted(set(ids["gid"]))),
        rules_text="\n".join(shown),
        notes=tuple(notes),
    )


# --- /proc/net -----------------------------------------------------------------------------


def _proc_address(hex_address: str) -> IPAddress:
    raw = bytes.fromhex(hex_address)
    if sys.byteorder == "little":
        # The kernel prints each 32-bit word in host byte order.
        raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.ip_address(raw)


@dataclass(frozen=True)
class Listener:
    """A socket bound to a local port, read from ``/proc/net/{udp,tcp}{,6}``."""

    address: IPAddress
    port: int
    uid: int
    inode: int


# Unconnected UDP sockets show state 07 (CLOSE), listening TCP sockets 0A (LISTEN).
_BOUND_STATES = {"07", "0A"}


def parse_proc_net(text: str, port: int) -> list[Listener]:
    """The bound (not connected) sockets on ``port`` in one ``/proc/net`` socket table."""
    found = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or fields[3] not in _BOUND_STATES:
            continue
        hex_address, _, hex_port = fields[1].partition(":")
        if int(hex_port, 16) != port:
            continue
        found.append(Listener(_proc_address(hex_address), port, int(fields[7]), int(fields[9])))
    return found


def listener_serves(listener: Listener, target: IPAddress) -> bool:
    """Whether a socket bound to ``listener.address`` receives packets sent to ``target``."""
    if listener.address == target:
        return True
    if listener.address.is_unspecified:
        # A v4 wildcard serves v4 only; a v6 wildcard serves both unless IPV6_V6ONLY
        # (which /proc does not show), so count it for both.
        return listener.address.version == 6 or target.version == 4
    return False
