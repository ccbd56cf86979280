"""Is pycorefile answering where capture sends queries? A real DNS query per address and
protocol, and who owns the listening socket (to catch a proxy that is not excluded)."""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
import time
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype

from ._rules import IPAddress, Listener, listener_serves, parse_proc_net

PROBE_TIMEOUT = 1.0
# A small question any DNS server answers at once by itself: it comes with the
# STATUS opcode, which servers answer NOTIMP without consulting a plugin or an
# upstream, so a slow upstream never makes a live proxy look dead.
PROBE_NAME = "."
PROBE_TYPE = dns.rdatatype.SOA
PROBE_OPCODE = dns.opcode.STATUS


@dataclass(frozen=True)
class ProbeResult:
    """The outcome of one query to the proxy."""

    address: IPAddress
    port: int
    protocol: str
    answered: bool
    detail: str

    @property
    def endpoint(self) -> str:
        """``127.0.0.1:15053`` or ``[::1]:15053``."""
        host = f"[{self.address}]" if self.address.version == 6 else str(self.address)
        return f"{host}:{self.port}"


def _exchange_udp(sock: socket.socket, query: dns.message.Message, deadline: float) -> bytes:
    sock.send(query.to_wire())
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        sock.settimeout(remaining)
        data = sock.recv(65535)
        if len(data) >= 2 and struct.unpack("!H", data[:2])[0] == query.id:
            return data


def _exchange_tcp(sock: socket.socket, query: dns.message.Message, deadline: float) -> bytes:
    wire = query.to_wire()
    sock.sendall(struct.pack("!H", len(wire)) + wire)
    buffer = b""
    while len(buffer) < 2 or len(buffer) < 2 + struct.unpack("!H", buffer[:2])[0]:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        sock.settimeout(remaining)
        chunk = sock.recv(65535)
        if not chunk:
            raise ConnectionResetError("connection closed before a reply")
        buffer += chunk
    return buffer[2 : 2 + struct.unpack("!H", buffer[:2])[0]]


def probe(
    address: IPAddress, port: int, protocol: str, timeout: float = PROBE_TIMEOUT
) -> ProbeResult:
    """Send one query for ``. SOA`` and say whether a DNS reply came back in time."""
    query = dns.message.make_query(PROBE_NAME, PROBE_TYPE)
    query.set_opcode(PROBE_OPCODE)
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    kind = socket.SOCK_DGRAM if protocol == "udp" else socket.SOCK_STREAM
    started = time.monotonic()
    deadline = started + timeout

    def result(answered: bool, detail: str) -> ProbeResult:
        return ProbeResult(address, port, protocol, answered, detail)

    try:
        with socket.socket(family, kind) as sock:
            sock.settimeout(timeout)
            # Connected, so a closed UDP port reports "refused" at once instead of a timeout.
            sock.connect((str(address), port))
            exchange = _exchange_udp if protocol == "udp" else _exchange_tcp
            wire = exchange(sock, query, deadline)
    except ConnectionRefusedError:
        return result(False, "connection refused: nothing listens there")
    except TimeoutError:
        return result(False, f"no reply within {timeout:g} s")
    except OSError as exc:
        return result(False, exc.strerror or str(exc))
    elapsed_ms = (time.monotonic() - started) * 1000
    try:
        reply = dns.message.from_wire(wire)
    except dns.exception.DNSException as exc:
        return result(False, f"the reply is not valid DNS ({exc})")
    if not reply.flags & dns.flags.QR:
        return result(False, "got a query back instead of a reply")
    return result(True, f"answered {dns.rcode.to_text(reply.rcode())} in {elapsed_ms:.1f} ms")


@dataclass(frozen=True)
class Owner:
    """Who runs the process behind a listening socket, as capture sees it."""

    uid: int
    gid: int | None  # the process's filesystem gid (what skgid matches), when found


def listeners(port: int, protocol: str, proc: Path = Path("/proc/net")) -> list[Listener]:
    """Sockets bound to ``port`` in this network namespace, IPv4 and IPv6."""
    found: list[Listener] = []
    for table in (protocol, protocol + "6"):
        try:
            found += parse_proc_net((proc / table).read_text(), port)
        except OSError:
            continue
    return found


def _gid_of_socket(inode: int) -> int | None:
    """The fsgid of a process holding the socket, by looking through /proc/*/fd."""
    wanted = f"socket:[{inode}]"
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            if not any(os.readlink(f"/proc/{pid}/fd/{fd}") == wanted for fd in fds):
                continue
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("Gid:"):
                return int(line.split()[4])
    return None


def owner_of(address: IPAddress, port: int) -> Owner | None:
    """The owner of the UDP socket that receives queries redirected to ``address:port``."""
    for listener in listeners(port, "udp"):
        if listener_serves(listener, address):
            return Owner(listener.uid, _gid_of_socket(listener.inode))
    return None


LOOPBACK = {4: ipaddress.ip_address("127.0.0.1"), 6: ipaddress.ip_address("::1")}
