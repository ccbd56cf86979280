"""The allocation rules, pure: which hosts qualify and which address pair each one gets.

No I/O happens here. An ``Allocator`` holds the allocation state (every host
that ever got a pair, present or departed) and turns the ServiceEntry hosts of
one table build into host → (IPv4, IPv6), changing as little as possible:
an assigned pair never moves unless the manifests claim one of its addresses
explicitly, and a departed host's pair stays reserved for it.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

ENABLE_LABEL = "networking.istio.io/enable-autoallocate-ip"
"""Label that opts a ServiceEntry out of allocation when its value is ``"false"``."""

Pair = tuple[str, str]
"""(IPv4 address, IPv6 address) of one host."""

HASHED = "hashed"
"""A new host's pair is found from a hash of its name (the default): see ``probe_offsets``."""
SEQUENTIAL = "sequential"
"""A new host takes the next free pair after the last one handed out (Istio's v2 order)."""
NO_NEW = "none"
"""No new host gets a pair: the control plane (istiod) allocates; pairs held stay."""
SCHEMES = (HASHED, SEQUENTIAL, NO_NEW)


class HostEntry(Protocol):
    """One ServiceEntry host without addresses, as meshhosts reports it."""

    @property
    def host(self) -> str: ...
    @property
    def namespace(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def created(self) -> str: ...
    @property
    def resolution(self) -> str: ...
    @property
    def wildcard(self) -> bool: ...
    @property
    def labels(self) -> Mapping[str, str]: ...
    @property
    def explicit_addresses(self) -> Sequence[str]: ...


def host_key(host: str) -> str:
    """The form hosts are compared and stored in: lowercased, no trailing dot."""
    return host.strip().rstrip(".").lower()


def ineligibility(entry: HostEntry) -> str | None:
    """Why ``entry`` gets no address, or None when it qualifies."""
    if entry.explicit_addresses:
        return "the host has addresses"
    resolution = (entry.resolution or "NONE").strip().upper()
    if resolution == "NONE":
        return "resolution NONE"
    if str(entry.labels.get(ENABLE_LABEL, "")).strip().lower() == "false":
        return f'label {ENABLE_LABEL}: "false"'
    wildcard = entry.wildcard or entry.host.strip().startswith("*")
    if wildcard and resolution != "DYNAMIC_DNS":
        return "wildcard host without resolution DYNAMIC_DNS"
    return None


def creation_order(entry: HostEntry) -> tuple[int, float, str, str, str]:
    """Allocation order: creation timestamp (entries without one last), namespace, name, host."""
    stamp = parse_timestamp(entry.created)
    dated = (0, stamp) if stamp is not None else (1, 0.0)
    return (*dated, entry.namespace, entry.name, host_key(entry.host))


def parse_timestamp(text: str | None) -> float | None:
    """An RFC 3339 timestamp (``2024-05-01T10:00:00Z``) as epoch seconds, None if absent/bad."""
    if not text:
        return None
    try:
        stamp = datetime.fromisoformat(str(text).strip())
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)  # Kubernetes writes UTC; YAML may drop the zone
    return stamp.timestamp()


@dataclass(frozen=True)
class Pool:
    """The two prefixes; offset ``i`` names the pair (IPv4 prefix + i, IPv6 prefix + i).

    Offsets run from 1 (the first usable address, ``240.240.0.1``) to
    ``capacity``; the IPv4 network and broadcast addresses and the IPv6
    subnet-router address are never handed out.
    """

    ipv4: ipaddress.IPv4Network
    ipv6: ipaddress.IPv6Network

    @property
    def capacity(self) -> int:
        return max(0, min(self.ipv4.num_addresses - 2, self.ipv6.num_addresses - 1))

    def pair(self, offset: int) -> Pair:
        return (
            str(self.ipv4.network_address + offset),
            str(self.ipv6.network_address + offset),
        )

    def offset(self, address: str) -> int | None:
        """The offset of ``address`` in its family's prefix if it is allocatable, else None."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return None
        net: ipaddress.IPv4Network | ipaddress.IPv6Network
        net = self.ipv4 if ip.version == 4 else self.ipv6
        if ip not in net:
            return None
        offset = int(ip) - int(net.network_address)
        return offset if 1 <= offset <= self.capacity else None

    def probe_offsets(self, host: str) -> Iterator[int]:
        """The offsets ``host`` tries, in order, under the hashed scheme: each offset once.

        A function of the host name and the capacity only. SHA-256 of the
        host (lowercased, no trailing dot) gives a home offset and a step
        coprime with the capacity (double hashing), so the walk visits every
        offset exactly once and two hosts that collide at home rarely
        collide again. SHA-256 rather than Python's ``hash``: the latter
        changes from process to process.
        """
        capacity = self.capacity
        if capacity <= 0:
            return
        digest = hashlib.sha256(host_key(host).encode()).digest()
        home = int.from_bytes(digest[:8], "big") % capacity
        step = 1
        if capacity > 2:
            step = 1 + int.from_bytes(digest[8:16], "big") % (capacity - 1)
            while math.gcd(step, capacity) != 1:
                step = step % (capacity - 1) + 1
        for i in range(capacity):
            yield (home + i * step) % capacity + 1

    def holds(self, record: Record) -> bool:
        """True when both addresses of ``record`` lie in the prefixes, at allocatable offsets."""
        v4, v6 = _ip(record.ipv4), _ip(record.ipv6)
        return (
            isinstance(v4, ipaddress.IPv4Address)
            and isinstance(v6, ipaddress.IPv6Address)
            and self.offset(record.ipv4) is not None
            and self.offset(record.ipv6) is not None
        )


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


@dataclass
class Record:
    """A host's pair and who holds it; ``released`` is set while the host is absent."""

    host: str
    ipv4: str
    ipv6: str
    namespace: str
    entry: str
    assigned: float
    released: float | None = None


@dataclass
class AllocationState:
    """Everything that must survive a restart: the records and where the next search starts."""

    records: dict[str, Record] = field(default_factory=dict)
    cursor: int = 1
    generation: int = 0


@dataclass(frozen=True)
class Owner:
    """The entry a present host is listed under (the first in allocation order)."""

    host: str
    namespace: str
    entry: str
    order: tuple[int, float, str, str, str]


@dataclass
class Outcome:
    """What one allocation round did, for logs, metrics and the caller."""

    assigned: dict[str, Pair] = field(default_factory=dict)
    """Pair of every qualifying host, keyed by the host as the entry spells it."""
    new: list[Record] = field(default_factory=list)
    moved: list[tuple[Record, str]] = field(default_factory=list)
    """Records given up because the manifests now use one of their addresses explicitly."""
    reclaimed: list[Record] = field(default_factory=list)
    """Reservations of departed hosts handed to new hosts because the prefix was full."""
    departed: list[Record] = field(default_factory=list)
    returned: list[Record] = field(default_factory=list)
    exhausted: list[Owner] = field(default_factory=list)
    changed: bool = False


class Allocator:
    """Assigns pairs to hosts, round after round, never moving an assigned pair.

    ``hold`` is how long (seconds) a departed host's pair stays reserved for
    it before it may go to another host, which happens only when no
    never-used address is left; None keeps reservations forever.

    ``scheme`` decides where a new host's pair is searched for: ``hashed``
    (the default) walks the host's own probe sequence (``Pool.probe_offsets``),
    so its pair depends on its name and on the few hosts that collide with
    it, not on how many hosts came before; ``sequential`` takes the next free
    offset after the last one handed out; ``none`` gives no new host a pair
    (the control plane allocates). Whatever the scheme, an assigned pair stays.
    """

    def __init__(
        self,
        pool: Pool,
        *,
        hold: float | None = 86400.0,
        clock: Callable[[], float] | None = None,
        state: AllocationState | None = None,
        scheme: str = HASHED,
    ) -> None:
        if scheme not in SCHEMES:
            raise ValueError(f"unknown allocation scheme {scheme!r}")
        self.pool = pool
        self.scheme = scheme
        self.hold = hold
        self.clock = clock or time.time
        self.state = AllocationState()
        self.owners: dict[str, Owner] = {}
        """Present hosts with their entry, from the last round."""
        self.unallocated: list[Owner] = []
        """Present hosts that got no pair in the last round (prefix exhausted)."""
        self.rounds = 0
        if state is not None:
            self.adopt(state)

    def adopt(self, state: AllocationState) -> list[Record]:
        """Take ``state`` (e.g. read from disk); return records dropped as outside the prefixes."""
        kept: dict[str, Record] = {}
        dropped: list[Record] = []
        for key, record in state.records.items():
            if self.pool.holds(record):
                kept[key] = record
            else:
                dropped.append(record)
        capacity = max(self.pool.capacity, 1)
        cursor = state.cursor if 1 <= state.cursor <= capacity else 1
        self.state = AllocationState(kept, cursor, state.generation)
        return dropped

    # -- One round ---------------------------------------------------------------

    def allocate(self, entries: Iterable[HostEntry], explicit: Iterable[str] = ()) -> Outcome:
        """Assign pairs for the hosts of one table build; ``explicit``: addresses in use."""
        now = self.clock()
        out = Outcome()
        entries = list(entries)
        owners: dict[str, Owner] = {}
        for entry in entries:
            key = host_key(entry.host)
            if not key or ineligibility(entry) is not None:
                continue
            owner = Owner(key, entry.namespace, entry.name, creation_order(entry))
            known = owners.get(key)
            if known is None or owner.order < known.order:
                owners[key] = owner
        claimed = Explicit.of([*explicit, *(a for e in entries for a in e.explicit_addresses)])
        records = self.state.records

        for key, record in list(records.items()):
            if not (claimed.claims(record.ipv4) or claimed.claims(record.ipv6)):
                continue
            del records[key]
            out.changed = True
            if key in owners:
                out.moved.append((record, "the manifests now use its address explicitly"))
            # A departed host's reservation simply ends: the address is the manifests' now.

        for key, record in records.items():
            present = owners.get(key)
            if present is None:
                if record.released is None:
                    record.released = now
                    out.departed.append(record)
                    out.changed = True
                continue
            if record.released is not None:
                record.released = None
                out.returned.append(record)
                out.changed = True
            if (record.namespace, record.entry) != (present.namespace, present.entry):
                record.namespace, record.entry = present.namespace, present.entry
                out.changed = True

        used = self._used_offsets(claimed)
        pending = sorted((o for k, o in owners.items() if k not in records), key=lambda o: o.order)
        if self.scheme == NO_NEW:
            pending = []  # the control plane allocates; its hosts never reach us
        for owner in pending:
            pair = self._fresh_pair(used, owner.host)
            if pair is None:
                pair = self._reclaim(now, out)
            if pair is None:
                out.exhausted.append(owner)
                continue
            fresh = Record(owner.host, pair[0], pair[1], owner.namespace, owner.entry, now)
            records[owner.host] = fresh
            out.new.append(fresh)
            out.changed = True

        for entry in entries:
            held = records.get(host_key(entry.host))
            if held is not None and held.released is None:
                out.assigned[entry.host] = (held.ipv4, held.ipv6)
        self.owners = owners
        self.unallocated = out.exhausted
        self.rounds += 1
        return out

    def _used_offsets(self, claimed: Explicit) -> set[int]:
        """Offsets no new host may take: held by a record or used explicitly."""
        used = claimed.offsets(self.pool)
        for record in self.state.records.values():
            for address in (record.ipv4, record.ipv6):
                offset = self.pool.offset(address)
                if offset is not None:
                    used.add(offset)
        return used

    def _fresh_pair(self, used: set[int], host: str) -> Pair | None:
        """A free pair for ``host`` by the scheme; a full prefix gives None."""
        capacity = self.pool.capacity
        if len(used) >= capacity:
            return None
        if self.scheme == HASHED:
            for offset in self.pool.probe_offsets(host):
                if offset not in used:
                    used.add(offset)
                    return self.pool.pair(offset)
            return None  # pragma: no cover - len(used) < capacity guarantees a free offset
        state = self.state
        start = state.cursor if 1 <= state.cursor <= capacity else 1
        for step in range(capacity):
            offset = (start - 1 + step) % capacity + 1
            if offset not in used:
                used.add(offset)
                state.cursor = offset % capacity + 1
                return self.pool.pair(offset)
        return None  # pragma: no cover - len(used) < capacity guarantees a free offset

    def _reclaim(self, now: float, out: Outcome) -> Pair | None:
        """The pair of the host that has been gone longest, if it has been gone ``hold``."""
        if self.hold is None:
            return None
        hold = self.hold
        gone = [
            r
            for r in self.state.records.values()
            if r.released is not None and now - r.released >= hold
        ]
        if not gone:
            return None
        oldest = min(gone, key=lambda r: (r.released or 0.0, r.host))
        del self.state.records[oldest.host]
        out.reclaimed.append(oldest)
        return (oldest.ipv4, oldest.ipv6)

    # -- Views -------------------------------------------------------------------

    def table(self, include_all: bool = False) -> list[dict[str, str]]:
        """Rows ``host, namespace, entry, ipv4, ipv6, status`` in address order.

        By default only hosts that have a pair now (status ``allocated``);
        ``include_all`` adds reservations of departed hosts (``reserved``) and
        hosts the prefix had no room for (``unallocated``, empty addresses).
        """
        rows: list[tuple[int, dict[str, str]]] = []
        for record in self.state.records.values():
            if record.released is not None and not include_all:
                continue
            row = {
                "host": record.host,
                "namespace": record.namespace,
                "entry": record.entry,
                "ipv4": record.ipv4,
                "ipv6": record.ipv6,
                "status": "allocated" if record.released is None else "reserved",
            }
            if record.released is not None:
                row["released"] = format_timestamp(record.released)
            rows.append((int(ipaddress.ip_address(record.ipv4)), row))
        rows.sort(key=lambda item: item[0])
        table = [row for _, row in rows]
        if include_all:
            for owner in self.unallocated:
                table.append(
                    {
                        "host": owner.host,
                        "namespace": owner.namespace,
                        "entry": owner.entry,
                        "ipv4": "",
                        "ipv6": "",
                        "status": "unallocated",
                    }
                )
        return table

    def counts(self) -> tuple[int, int, int]:
        """(hosts with a pair now, reservations of departed hosts, hosts without a pair)."""
        present = sum(1 for r in self.state.records.values() if r.released is None)
        return present, len(self.state.records) - present, len(self.unallocated)


@dataclass(frozen=True)
class Explicit:
    """Addresses the manifests use explicitly: single addresses and CIDR ranges."""

    addresses: frozenset[ipaddress.IPv4Address | ipaddress.IPv6Address]
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]

    @classmethod
    def of(cls, texts: Iterable[str]) -> Explicit:
        """Parse addresses and CIDRs (``spec.addresses`` may hold either); skip invalid text."""
        addresses: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
        networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for text in texts:
            try:
                net = ipaddress.ip_network(str(text).strip(), strict=False)
            except ValueError:
                continue
            if net.num_addresses == 1:
                addresses.add(net.network_address)
            else:
                networks.append(net)
        return cls(frozenset(addresses), tuple(networks))

    def claims(self, address: str) -> bool:
        ip = _ip(address)
        if ip is None:
            return False
        return ip in self.addresses or any(ip in net for net in self.networks)

    def offsets(self, pool: Pool) -> set[int]:
        """The allocatable offsets of ``pool`` these addresses cover."""
        used: set[int] = set()
        for ip in self.addresses:
            offset = pool.offset(str(ip))
            if offset is not None:
                used.add(offset)
        for net in self.networks:
            prefix: ipaddress.IPv4Network | ipaddress.IPv6Network
            prefix = pool.ipv4 if net.version == 4 else pool.ipv6
            if not net.overlaps(prefix):
                continue
            base = int(prefix.network_address)
            first = max(1, int(net.network_address) - base)
            last = min(pool.capacity, int(net.broadcast_address) - base)
            used.update(range(first, last + 1))
        return used


def format_timestamp(epoch: float) -> str:
    """Epoch seconds as an RFC 3339 UTC timestamp with second precision."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
