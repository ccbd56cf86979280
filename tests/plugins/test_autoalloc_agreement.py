"""autoalloc agreeing across servers: the hashed scheme, and istiod's status addresses.

Pure allocator tests first (the scheme is a function of the objects), then the
real server: meshhosts serving ``status.addresses`` from manifest files, and two
``pycorefile`` processes, each with its own state file, giving the same table.
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import time
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import trio
import yaml

from pycorefile.testing import query, serve
from pycorefile_plugins.autoalloc import HASHED, NO_NEW, Allocator, Pool
from pycorefile_plugins.meshhosts._sources import parse_text
from pycorefile_plugins.meshhosts._table import (
    build_table,
    explicit_addresses,
    service_entry_hosts,
)

from ..process import ServerProcess, free_port, get_json, run_cli, wait_until
from .test_autoalloc_allocator import SE, pool


def stamp(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1_700_000_000 + second))


def colliding(p: Pool, count: int) -> list[str]:
    """``count`` host names whose first probe is the same offset in ``p``."""
    by_home: dict[int, list[str]] = {}
    for i in range(100_000):
        host = f"h{i}.example"
        group = by_home.setdefault(next(p.probe_offsets(host)), [])
        group.append(host)
        if len(group) == count:
            return group
    raise AssertionError("no collision found")


# -- The scheme, pure ----------------------------------------------------------------------


def test_hashed_pairs_are_pinned() -> None:
    # These are what every server of every version computes: changing them would make
    # servers of two versions disagree. Case and a trailing dot change nothing.
    a = Allocator(pool())
    out = a.allocate([SE("db.example.internal"), SE("Auto.Internal.")])
    assert out.assigned == {
        "db.example.internal": ("240.240.163.129", "2001:2::a381"),
        "Auto.Internal.": ("240.240.151.255", "2001:2::97ff"),
    }
    assert a.scheme == HASHED


def test_the_probe_sequence_visits_every_offset_once() -> None:
    for v4, v6 in [
        ("240.240.0.0/30", "2001:2::/120"),  # capacity 2
        ("240.240.0.0/29", "2001:2::/120"),  # 6
        ("240.240.0.0/24", "2001:2::/120"),  # 254
        ("240.240.0.0/16", "2001:2::/118"),  # 1023, odd
        ("240.240.0.0/16", "2001:2::/48"),  # 65534
    ]:
        p = pool(v4, v6)
        for host in ("a.example", "b.example", "db.example.internal"):
            offsets = list(p.probe_offsets(host))
            assert sorted(offsets) == list(range(1, p.capacity + 1)), (v4, v6, host)


def test_the_older_of_two_colliding_hosts_gets_the_home_pair() -> None:
    p = pool("240.240.0.0/24", "2001:2::/120")
    first, second = colliding(p, 2)
    home = p.pair(next(p.probe_offsets(first)))
    for order in ([first, second], [second, first]):
        entries = [SE(first, created=stamp(1)), SE(second, created=stamp(2))]
        if order[0] == second:
            entries.reverse()
        out = Allocator(p).allocate(entries)
        assert out.assigned[first] == home
        assert out.assigned[second] != home


def _population(count: int, rng: random.Random) -> list[SE]:
    """Entries with creation times spread over hours, some sharing a second."""
    return [
        SE(
            f"svc{i}.partner{i % 7}.example",
            namespace=f"ns{i % 5}",
            created=stamp(rng.randrange(900)),
        )
        for i in range(count)
    ]


def test_servers_agree_whatever_the_order_and_the_batches() -> None:
    # A pool of 510 pairs for 300 hosts: many collisions. One server sees everything at
    # once, shuffled; another sees the entries arrive in creation order, a few at a time
    # (as a watch delivers them); a third restarts half-way from its state.
    rng = random.Random(21)
    p = pool("240.240.0.0/23", "2001:2::/64")
    entries = _population(300, rng)
    all_at_once = Allocator(p)
    shuffled = entries[:]
    rng.shuffle(shuffled)
    expected = all_at_once.allocate(shuffled).assigned

    live = Allocator(p)
    arrived: list[SE] = []
    by_creation = sorted(entries, key=lambda e: (e.created, e.namespace, e.name, e.host))
    while len(arrived) < len(by_creation):
        arrived.extend(by_creation[len(arrived) : len(arrived) + rng.randint(1, 9)])
        live.allocate(arrived)
    assert live.allocate(entries).assigned == expected

    restarted = Allocator(p, state=live.state)
    assert restarted.allocate(list(reversed(entries))).assigned == expected
    assert len(set(expected.values())) == len(expected) == 300


def test_hashed_pairs_never_move_and_are_never_shared_under_churn() -> None:
    rng = random.Random(7)
    p = pool("240.240.0.0/24", "2001:2::/120")
    clock = [1_700_000_000.0]
    a = Allocator(p, clock=lambda: clock[0], hold=3600.0)
    universe = _population(400, rng)
    present: list[SE] = []
    held: dict[str, tuple[str, str]] = {}
    explicit: list[str] = []
    for _round in range(200):
        clock[0] += rng.choice([1.0, 600.0, 7200.0])
        action = rng.random()
        if action < 0.5 and len(present) < 300:
            present.append(rng.choice(universe))
        elif action < 0.8 and present:
            present.pop(rng.randrange(len(present)))
        elif action < 0.85:
            explicit = [str(p.pair(rng.randrange(1, p.capacity + 1))[0])]
        else:
            rng.shuffle(present)
        out = a.allocate(present, explicit)
        moved = {r.host for r, _ in out.moved}
        for host, pair in out.assigned.items():
            key = host.lower().rstrip(".")
            if key in held and key not in moved:
                assert held[key] == pair, key  # never moves (a reservation comes back too)
        records = list(a.state.records.values())
        v4s = [r.ipv4 for r in records]
        assert len(v4s) == len(set(v4s))  # never two hosts
        assert not set(v4s) & set(explicit)
        for record in records:
            held[record.host] = (record.ipv4, record.ipv6)
        for record in out.reclaimed:
            held.pop(record.host, None)


def test_what_can_still_differ_between_two_histories() -> None:
    # Server A saw a host that is gone now; its pair stays reserved on A. Server B never
    # saw it. A new host whose probe passes the reserved offset gets another pair on A
    # than on B; every other host agrees.
    p = pool("240.240.0.0/24", "2001:2::/120")
    gone, rival = colliding(p, 2)
    others = [SE(f"o{i}.example", created=stamp(10 + i)) for i in range(40)]
    a, b = Allocator(p), Allocator(p)
    a.allocate([SE(gone, created=stamp(1)), *others])
    now = [*others, SE(rival, created=stamp(99))]
    on_a, on_b = a.allocate(now).assigned, b.allocate(now).assigned
    differing = {h for h in on_a if on_a[h] != on_b[h]}
    assert differing == {rival}
    assert on_b[rival] == p.pair(next(p.probe_offsets(gone)))  # B gives it the free home


def test_assign_none_gives_no_new_host_a_pair_and_keeps_those_held() -> None:
    p = pool()
    before = Allocator(p)
    held = before.allocate([SE("old.example")]).assigned
    after = Allocator(p, scheme=NO_NEW, state=before.state)
    out = after.allocate([SE("old.example"), SE("new.example", created=stamp(5))])
    assert out.assigned == held
    assert not out.exhausted and not after.unallocated


# -- Status addresses, through meshhosts' table (pure) ------------------------------------


def _se_yaml(
    name: str,
    hosts: list[str],
    *,
    created: str = "2024-01-01T00:00:00Z",
    resolution: str = "DNS",
    status: list[dict[str, str]] | None = None,
    addresses: list[str] | None = None,
    namespace: str = "shop",
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": created},
        "spec": {
            "hosts": hosts,
            "ports": [{"number": 443, "name": "tls", "protocol": "TLS"}],
            "resolution": resolution,
        },
    }
    if addresses:
        doc["spec"]["addresses"] = addresses
    if status is not None:
        doc["status"] = {"addresses": status}
    return doc


def test_status_addresses_are_served_and_kept_from_the_allocator() -> None:
    docs = [
        _se_yaml(
            "pay",
            ["pay.partner.example", "refund.partner.example"],
            status=[
                {"value": "240.240.0.1", "host": "pay.partner.example"},
                {"value": "2001:2::1", "host": "pay.partner.example"},
                {"value": "240.240.0.2", "host": "REFUND.partner.example"},
            ],
        ),
        # The same host in another entry without status: istiod's address is the answer.
        _se_yaml("pay-copy", ["pay.partner.example"], namespace="other"),
        # Stale status on an entry that now has an address of its own: the spec wins.
        _se_yaml(
            "fixed",
            ["fixed.partner.example"],
            addresses=["192.0.2.9"],
            status=[{"value": "240.240.0.9", "host": "fixed.partner.example"}],
        ),
        _se_yaml("plain", ["plain.partner.example"]),
    ]
    sources = parse_text(yaml.safe_dump_all(docs), "mesh.yaml")
    hosts = [h.host for h in service_entry_hosts(sources)]
    assert hosts == ["plain.partner.example"]
    explicit = explicit_addresses(sources)
    assert {"240.240.0.1", "2001:2::1", "240.240.0.2", "240.240.0.9"} <= explicit
    allocated = {"plain.partner.example": ("240.240.7.7", "2001:2::707")}
    table = build_table(sources, allocations=allocated).entries
    assert table["pay.partner.example."].addresses == ("240.240.0.1", "2001:2::1")
    assert table["refund.partner.example."].addresses == ("240.240.0.2",)
    assert table["fixed.partner.example."].addresses == ("192.0.2.9",)
    assert table["plain.partner.example."].addresses == ("240.240.7.7", "2001:2::707")


# -- The real server ------------------------------------------------------------------


def _corefile(manifests: Path, state: Path, dns_port: int = 0, http: str = "127.0.0.1:0") -> str:
    return (
        f".:{dns_port} {{\n    bind 127.0.0.1\n"
        f"    autoalloc {{\n        state {state}\n        http {http}\n    }}\n"
        f"    meshhosts {{\n        file {manifests}\n        reload 100ms\n    }}\n}}\n"
    )


def _write(path: Path, docs: list[dict[str, Any]]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump_all(docs))
    os.replace(tmp, path)


async def test_server_answers_status_addresses_and_allocates_around_them(tmp_path: Path) -> None:
    p = pool()
    # istiod gave "theirs" exactly the pair "mine" would hash to: autoalloc must go on.
    home = p.pair(next(p.probe_offsets("mine.partner.example")))
    manifests = tmp_path / "mesh.yaml"
    _write(
        manifests,
        [
            _se_yaml(
                "theirs",
                ["theirs.partner.example"],
                status=[
                    {"value": home[0], "host": "theirs.partner.example"},
                    {"value": home[1], "host": "theirs.partner.example"},
                ],
            ),
            _se_yaml("mine", ["mine.partner.example"], created="2024-02-01T00:00:00Z"),
        ],
    )
    async with serve(_corefile(manifests, tmp_path / "alloc.json")) as server:
        for _ in range(100):
            reply = await query(server, "mine.partner.example", "A")
            if reply.answer:
                break
            await trio.sleep(0.05)
        theirs = await query(server, "theirs.partner.example", "A")
        theirs6 = await query(server, "theirs.partner.example", "AAAA", proto="tcp")
        mine = await query(server, "mine.partner.example", "A")
        assert [r.to_text() for rr in theirs.answer for r in rr] == [home[0]]
        assert [r.to_text() for rr in theirs6.answer for r in rr] == [home[1]]
        mine_v4 = [r.to_text() for rr in mine.answer for r in rr]
        assert len(mine_v4) == 1 and mine_v4[0] != home[0]
        assert ipaddress.ip_address(mine_v4[0]) in p.ipv4
        status, body = await _http_get(server, "/allocations")
        rows = json.loads(body)
        assert status == 200
        assert [(r["host"], r["status"], r["ipv4"]) for r in rows if r["ipv4"] == home[0]] == [
            ("theirs.partner.example", "control-plane", home[0])
        ]
        assert {r["host"]: r["status"] for r in rows} == {
            "theirs.partner.example": "control-plane",
            "mine.partner.example": "allocated",
        }
    saved = json.loads((tmp_path / "alloc.json").read_text())
    assert [h["host"] for h in saved["hosts"]] == ["mine.partner.example"]
    # The same table without a server, and with `assign none` nothing of ours is added.
    conf = tmp_path / "Corefile"
    conf.write_text(
        _corefile(manifests, tmp_path / "other.json").replace(
            "        http", "        assign none\n        http"
        )
    )
    done = run_cli("-conf", str(conf), "-allocations")
    assert done.returncode == 0, done.stderr
    offline = json.loads(done.stdout)
    assert [(r["host"], r["status"], r["ipv6"]) for r in offline] == [
        ("theirs.partner.example", "control-plane", home[1])
    ]


async def _http_get(server: Any, path: str) -> tuple[int, bytes]:
    """GET ``path`` from the block's HTTP listener (127.0.0.1:0): status and body."""
    stream = await trio.open_tcp_stream(*server.http_address("127.0.0.1", 0))
    async with stream:
        request = f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        await stream.send_all(request.encode())
        data = b""
        with trio.fail_after(5):
            while chunk := await stream.receive_some(65536):
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


def _table(port: int) -> dict[str, tuple[str, str]]:
    rows = get_json(port, "/allocations")
    return {r["host"]: (r["ipv4"], r["ipv6"]) for r in rows}


def test_two_processes_with_their_own_state_agree(tmp_path: Path) -> None:
    # Server A starts on the first entries and sees the rest arrive in two steps;
    # server B starts when everything is there. Each keeps its own state file. A /26
    # (62 pairs) for 40 hosts makes collisions certain.
    rng = random.Random(3)
    docs = [
        _se_yaml(
            f"ext{i}",
            [f"ext{i}.partner.example"],
            namespace=f"team{i % 4}",
            created=stamp(i * 5 + rng.randrange(3)),
        )
        for i in range(40)
    ]
    manifests = tmp_path / "mesh.yaml"
    ports: list[tuple[int, int]] = []
    confs: list[Path] = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        dns_port, http_port = free_port(), free_port()
        conf = tmp_path / name / "Corefile"
        conf.write_text(
            _corefile(
                manifests, tmp_path / name / "alloc.json", dns_port, f"127.0.0.1:{http_port}"
            ).replace("autoalloc {", "autoalloc 240.240.4.0/26 2001:2:0:4::/120 {")
        )
        ports.append((dns_port, http_port))
        confs.append(conf)
    _write(manifests, docs[:10])
    with ServerProcess(["-conf", str(confs[0])]) as a:
        a.wait_for("pycorefile-")
        wait_until(lambda: len(_table(ports[0][1])) == 10)
        _write(manifests, docs[:25])
        wait_until(lambda: len(_table(ports[0][1])) == 25)
        _write(manifests, docs)
        wait_until(lambda: len(_table(ports[0][1])) == 40)
        with ServerProcess(["-conf", str(confs[1])]) as b:
            b.wait_for("pycorefile-")
            wait_until(lambda: len(_table(ports[1][1])) == 40)
            on_a, on_b = _table(ports[0][1]), _table(ports[1][1])
            assert on_a == on_b
            assert len(set(on_a.values())) == 40
            for host in ("ext0.partner.example", "ext17.partner.example", "ext39.partner.example"):
                answers = []
                for dns_port, _ in ports:
                    reply = dns.query.udp(
                        dns.message.make_query(host, "A"), "127.0.0.1", port=dns_port, timeout=3
                    )
                    answers.append([r.to_text() for rr in reply.answer for r in rr])
                assert answers[0] == answers[1] == [on_a[host][0]]
