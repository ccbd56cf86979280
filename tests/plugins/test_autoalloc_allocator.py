"""autoalloc's allocation rules, pure: no files, no server."""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import pytest

from pycorefile_plugins.autoalloc import (
    ENABLE_LABEL,
    SEQUENTIAL,
    AllocationState,
    Allocator,
    Pool,
    Record,
    ineligibility,
)


@dataclass(frozen=True)
class SE:
    """Stands in for meshhosts' ServiceEntryHost (same attributes)."""

    host: str
    namespace: str = "default"
    name: str = ""
    created: str = "2024-01-01T00:00:00Z"
    resolution: str = "STATIC"
    wildcard: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)
    explicit_addresses: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", self.host.split(".")[0].lstrip("*") or "wild")


def pool(v4: str = "240.240.0.0/16", v6: str = "2001:2::/48") -> Pool:
    return Pool(ipaddress.IPv4Network(v4), ipaddress.IPv6Network(v6))


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def allocator(**kwargs: object) -> Allocator:
    return Allocator(pool(), clock=Clock(), scheme=SEQUENTIAL, **kwargs)  # type: ignore[arg-type]


def test_seed_scenario_first_host_gets_first_usable_pair() -> None:
    a = allocator()
    out = a.allocate([SE("auto.internal")], explicit=["10.0.0.5"])
    assert out.assigned == {"auto.internal": ("240.240.0.1", "2001:2::1")}
    assert [r.host for r in out.new] == ["auto.internal"]


def test_two_rds_hosts_on_one_port_get_distinct_pairs() -> None:
    a = allocator()
    out = a.allocate(
        [
            SE("db1.abc.eu-west-1.rds.amazonaws.com", created="2024-01-01T00:00:00Z"),
            SE("db2.abc.eu-west-1.rds.amazonaws.com", created="2024-01-02T00:00:00Z"),
        ]
    )
    assert out.assigned == {
        "db1.abc.eu-west-1.rds.amazonaws.com": ("240.240.0.1", "2001:2::1"),
        "db2.abc.eu-west-1.rds.amazonaws.com": ("240.240.0.2", "2001:2::2"),
    }


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        (SE("a.example", resolution="NONE"), "resolution NONE"),
        (SE("a.example", resolution=""), "resolution NONE"),
        (SE("a.example", labels={ENABLE_LABEL: "false"}), "label"),
        (SE("a.example", labels={ENABLE_LABEL: "False"}), "label"),
        (SE("*.example", wildcard=True, resolution="DNS"), "wildcard"),
        (SE("*.example", wildcard=True, resolution="STATIC"), "wildcard"),
        (SE("a.example", explicit_addresses=("10.1.1.1",)), "has addresses"),
    ],
)
def test_hosts_that_get_no_address(entry: SE, reason: str) -> None:
    assert reason in (ineligibility(entry) or "")
    assert allocator().allocate([entry]).assigned == {}


@pytest.mark.parametrize(
    "entry",
    [
        SE("a.example", resolution="DNS"),
        SE("a.example", resolution="dns_round_robin"),
        SE("a.example", labels={ENABLE_LABEL: "true"}),
        SE("*.example", wildcard=True, resolution="DYNAMIC_DNS"),
    ],
)
def test_hosts_that_get_an_address(entry: SE) -> None:
    assert ineligibility(entry) is None
    assert allocator().allocate([entry]).assigned == {entry.host: ("240.240.0.1", "2001:2::1")}


def test_same_host_in_several_entries_shares_one_pair_listed_under_the_oldest() -> None:
    a = allocator()
    out = a.allocate(
        [
            SE("shared.example", namespace="b", name="late", created="2024-03-01T00:00:00Z"),
            SE("Shared.Example.", namespace="a", name="early", created="2024-02-01T00:00:00Z"),
            SE("other.example", created="2024-02-15T00:00:00Z"),
        ]
    )
    assert out.assigned["shared.example"] == out.assigned["Shared.Example."]
    assert out.assigned["shared.example"] == ("240.240.0.1", "2001:2::1")
    assert out.assigned["other.example"] == ("240.240.0.2", "2001:2::2")
    row = a.table()[0]
    assert (row["host"], row["namespace"], row["entry"]) == ("shared.example", "a", "early")


def test_one_qualifying_entry_is_enough_for_a_host_listed_twice() -> None:
    out = allocator().allocate(
        [SE("x.example", resolution="NONE", name="open"), SE("x.example", name="static")]
    )
    assert out.assigned == {"x.example": ("240.240.0.1", "2001:2::1")}


def test_explicit_addresses_in_the_prefix_are_never_allocated() -> None:
    a = allocator()
    out = a.allocate(
        [SE("a.example"), SE("b.example", created="2024-01-02T00:00:00Z")],
        explicit=["240.240.0.1", "2001:2::2", "240.240.0.8/30"],
    )
    # offset 1 (v4 explicit), 2 (v6 explicit), 8-11 (CIDR) are skipped
    assert out.assigned == {
        "a.example": ("240.240.0.3", "2001:2::3"),
        "b.example": ("240.240.0.4", "2001:2::4"),
    }


def test_creation_order_then_namespace_name_host() -> None:
    entries = [
        SE("d.example", namespace="z", created="2024-01-01T00:00:00Z"),
        SE("c.example", namespace="a", name="n2", created="2024-01-01T00:00:00Z"),
        SE("b.example", namespace="a", name="n1", created="2024-01-01T00:00:00Z"),
        SE("a.example", namespace="a", name="n1", created="2024-01-01T00:00:00Z"),
        SE("e.example", created="2023-12-31T23:59:59+00:00"),
        SE("f.example", created=""),  # no timestamp: after every dated entry
    ]
    out = allocator().allocate(entries)
    order = sorted(out.assigned, key=lambda h: int(ipaddress.ip_address(out.assigned[h][0])))
    assert order == ["e.example", "a.example", "b.example", "c.example", "d.example", "f.example"]


def test_two_independent_allocators_agree_whatever_the_input_order() -> None:
    entries = [
        SE(f"svc{i}.example", namespace=f"ns{i % 3}", created=f"2024-01-{1 + i % 5:02d}T00:00:00Z")
        for i in range(40)
    ]
    shuffled = entries[:]
    random.Random(7).shuffle(shuffled)
    first, second = allocator(), allocator()
    assert first.allocate(entries).assigned == second.allocate(shuffled).assigned
    assert first.table() == second.table()


def test_adding_removing_renaming_and_reordering_others_changes_nothing() -> None:
    a = allocator()
    base = [
        SE("a.example", created="2024-01-05T00:00:00Z"),
        SE("b.example", created="2024-01-06T00:00:00Z"),
        SE("c.example", created="2024-01-07T00:00:00Z"),
    ]
    before = a.allocate(base).assigned
    rounds = [
        # an older entry appears: it must not push the others
        [SE("old.example", created="2020-01-01T00:00:00Z"), *base],
        # one disappears
        [base[0], base[2]],
        # reordered, entry renamed and moved to another namespace, host unchanged
        [base[2], replace(base[1], name="renamed", namespace="other"), base[0]],
        # a host in the middle is renamed (new host), another added
        [base[0], SE("b2.example"), base[2], SE("zzz.example")],
    ]
    for entries in rounds:
        after = a.allocate(entries).assigned
        for host, pair in after.items():
            if host in before:
                assert pair == before[host], host
    # every pair ever handed out went to one host only
    pairs = [(r.ipv4, r.ipv6) for r in a.state.records.values()]
    assert len(pairs) == len(set(pairs))


def test_a_departed_host_keeps_its_reservation_and_gets_it_back() -> None:
    a = allocator()
    a.allocate([SE("gone.example"), SE("stay.example", created="2024-01-02T00:00:00Z")])
    out = a.allocate([SE("stay.example", created="2024-01-02T00:00:00Z"), SE("new.example")])
    assert [r.host for r in out.departed] == ["gone.example"]
    assert out.assigned["new.example"] == ("240.240.0.3", "2001:2::3")
    assert a.counts() == (2, 1, 0)
    reserved = [row for row in a.table(include_all=True) if row["status"] == "reserved"]
    assert reserved[0]["host"] == "gone.example" and reserved[0]["ipv4"] == "240.240.0.1"
    back = a.allocate([SE("gone.example"), SE("new.example")])
    assert back.assigned["gone.example"] == ("240.240.0.1", "2001:2::1")
    assert [r.host for r in back.returned] == ["gone.example"]


def test_the_search_moves_on_so_a_freed_pair_is_not_reused_first() -> None:
    clock = Clock()
    a = Allocator(pool(), scheme=SEQUENTIAL, clock=clock, hold=0.0)
    a.allocate([SE("one.example")])
    a.allocate([])  # one.example leaves; its pair is reclaimable at once (hold 0)
    out = a.allocate([SE("two.example")])
    assert out.assigned["two.example"] == ("240.240.0.2", "2001:2::2")


def test_exhaustion_with_a_tiny_prefix() -> None:
    clock = Clock()
    a = Allocator(
        pool("240.240.0.0/30", "2001:2::/64"), scheme=SEQUENTIAL, clock=clock, hold=3600.0
    )
    assert a.pool.capacity == 2
    entries = [SE(f"h{i}.example", created=f"2024-01-0{i + 1}T00:00:00Z") for i in range(3)]
    out = a.allocate(entries)
    assert out.assigned == {
        "h0.example": ("240.240.0.1", "2001:2::1"),
        "h1.example": ("240.240.0.2", "2001:2::2"),
    }
    assert [o.host for o in out.exhausted] == ["h2.example"]
    assert a.counts() == (2, 0, 1)
    assert a.table(include_all=True)[-1] == {
        "host": "h2.example",
        "namespace": "default",
        "entry": "h2",
        "ipv4": "",
        "ipv6": "",
        "status": "unallocated",
    }
    # h0 leaves: its pair stays reserved for the hold period, h2 still waits
    out = a.allocate(entries[1:])
    assert [o.host for o in out.exhausted] == ["h2.example"]
    assert out.assigned["h1.example"] == ("240.240.0.2", "2001:2::2")
    # after the hold, the reservation goes to the waiting host
    clock.now += 3600
    out = a.allocate(entries[1:])
    assert out.assigned["h2.example"] == ("240.240.0.1", "2001:2::1")
    assert [r.host for r in out.reclaimed] == ["h0.example"]
    assert out.exhausted == []


def test_hold_forever_never_reclaims() -> None:
    clock = Clock()
    a = Allocator(pool("240.240.0.0/30", "2001:2::/126"), scheme=SEQUENTIAL, clock=clock, hold=None)
    a.allocate([SE("a.example"), SE("b.example")])
    clock.now += 10 * 365 * 86400
    out = a.allocate([SE("c.example")])
    assert [o.host for o in out.exhausted] == ["c.example"]


def test_a_pair_claimed_explicitly_by_the_manifests_moves_and_is_reported() -> None:
    a = allocator()
    a.allocate([SE("auto.example"), SE("other.example", created="2024-02-01T00:00:00Z")])
    out = a.allocate(
        [SE("auto.example"), SE("other.example", created="2024-02-01T00:00:00Z")],
        explicit=["240.240.0.1"],
    )
    assert [r.host for r, _ in out.moved] == ["auto.example"]
    assert out.assigned["auto.example"] == ("240.240.0.3", "2001:2::3")
    assert out.assigned["other.example"] == ("240.240.0.2", "2001:2::2")


def test_unchanged_round_reports_no_change() -> None:
    a = allocator()
    entries = [SE("a.example")]
    assert a.allocate(entries).changed
    assert not a.allocate(entries).changed


def test_adopted_records_outside_the_prefixes_are_dropped() -> None:
    state = AllocationState(
        {
            "in.example": Record("in.example", "240.240.0.7", "2001:2::7", "ns", "e", 0.0),
            "out.example": Record("out.example", "240.241.0.1", "2001:2::8", "ns", "e", 0.0),
        },
        cursor=8,
        generation=3,
    )
    a = Allocator(pool(), scheme=SEQUENTIAL, state=state)
    assert [r.host for r in a.adopt(state)] == ["out.example"]
    out = a.allocate([SE("in.example"), SE("out.example", created="2024-05-01T00:00:00Z")])
    assert out.assigned == {
        "in.example": ("240.240.0.7", "2001:2::7"),
        "out.example": ("240.240.0.8", "2001:2::8"),
    }
