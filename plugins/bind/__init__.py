"""bind: the addresses a server block listens on, as CoreDNS's bind."""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct
from collections.abc import Sequence

from pycorefile import Directive, Plugin, SetupContext, SetupError, check_args

_SIOCGIFADDR = 0x8915


class BindPlugin(Plugin):
    """Setup only: restricts the block's listeners to addresses or interfaces."""

    serves_queries = False
    repeatable = True

    def __init__(self, hosts: list[str]) -> None:
        self.hosts = hosts

    @classmethod
    def setup(cls, directives: Sequence[Directive], ctx: SetupContext) -> BindPlugin:
        hosts = parse_bind(directives)
        ctx.listen_hosts = hosts
        return cls(hosts)


def parse_bind(directives: Sequence[Directive]) -> list[str]:
    """Addresses to listen on: each ADDRESS or IFACE, less the ``except`` ones."""
    include: list[str] = []
    exclude: set[str] = set()
    for d in directives:
        check_args(d, 1)
        for i, arg in enumerate(d.args):
            include.extend(_addresses(arg, d, i))
        for option in d.block or ():
            if option.name != "except":
                raise SetupError(f"unknown property '{option.name}'", option)
            check_args(option, 1)
            for i, arg in enumerate(option.args):
                exclude.update(_addresses(arg, option, i))
    hosts: list[str] = []
    for host in include:
        if host not in exclude and host not in hosts:
            hosts.append(host)
    if not hosts:
        raise SetupError("no address left to bind to", directives[0])
    return hosts


def _addresses(arg: str, d: Directive, index: int) -> list[str]:
    try:
        return [str(ipaddress.ip_address(arg.strip("[]")))]
    except ValueError:
        pass
    found = interface_addresses(arg)
    if not found:
        raise SetupError(f"not a valid IP address or interface name: {arg!r}", d, index)
    return found


def interface_addresses(name: str) -> list[str]:
    """The IPv4 and global/link IPv6 addresses of a network interface, if it exists."""
    if name not in {n for _, n in socket.if_nameindex()}:
        return []
    out: list[str] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            packed = struct.pack("256s", name.encode()[:15])
            res = fcntl.ioctl(s.fileno(), _SIOCGIFADDR, packed)
            out.append(socket.inet_ntoa(res[20:24]))
        except OSError:
            pass
    try:
        with open("/proc/net/if_inet6") as f:
            for line in f:
                fields = line.split()
                if len(fields) == 6 and fields[5] == name:
                    raw = bytes.fromhex(fields[0])
                    addr = ipaddress.IPv6Address(raw)
                    if not addr.is_link_local:
                        out.append(str(addr))
    except OSError:
        pass
    return out
