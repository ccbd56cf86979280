"""Coherent answers: a change of the mesh table reaches every client on the next query.

The real server on loopback with autopath, cache, meshhosts and forward to a
real test upstream on 127.0.0.3; the table is a file rewritten on disk and
reloaded (``MeshHostsPlugin.check``, one round of its reload loop, or the loop
itself). Every name form meshhosts answers is asked before a change (so the
cache, and autopath for search-expanded names, hold the old answer, some of
them the upstream's NXDOMAIN) and must be answered from the new table on the
very first query after the change is loaded. Forwarded names the change does
not touch stay cached: the upstream is not asked again and the cache counts
hits, not misses.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
import trio
import yaml

from pycorefile import DataChange, DataChanges, Server
from pycorefile.changes import MAX_LOGGED_CHANGES
from pycorefile.testing import Upstream, query, scrape, serve
from pycorefile_plugins.meshhosts import MeshHostsPlugin
from pycorefile_plugins.meshhosts._answers import changed_names
from pycorefile_plugins.meshhosts._table import EXTERNAL, KUBERNETES, HostEntry
from tests.udp_server import HeldUpstream

NOERROR, NXDOMAIN = dns.rcode.NOERROR, dns.rcode.NXDOMAIN
UPSTREAM_HOST = "127.0.0.3"
DOMAIN = "cluster.local."

_mtimes = itertools.count(1_000_000)

Table = dict[str, dict[str, Any]]


def kube(name: str, namespace: str, *ips: str) -> Table:
    """A Kubernetes Service's NameTable row."""
    return {
        f"{name}.{namespace}.svc.cluster.local": {
            "ips": list(ips),
            "registry": "Kubernetes",
            "shortname": name,
            "namespace": namespace,
        }
    }


def external(host: str, *ips: str) -> Table:
    return {host: {"ips": list(ips), "registry": "External"}}


def write_table(path: Path, *rows: Table) -> None:
    """Replace the NameTable file as a writer would (a new file renamed over it)."""
    table: Table = {}
    for row in rows:
        table.update(row)
    write_text(path, json.dumps({"table": table}))


def write_text(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    stamp = next(_mtimes) * 10**9
    os.utime(tmp, ns=(stamp, stamp))
    os.replace(tmp, path)


def corefile(
    table: Path, resolv: Path, upstream: Upstream | HeldUpstream, *, reload: str = "0"
) -> str:
    return f""".:0 {{
    bind 127.0.0.1
    prometheus 127.0.0.1:0
    autopath @meshhosts
    cache
    meshhosts {{
        file {table}
        namespace ns1
        resolv_conf {resolv}
        reload {reload}
        fallthrough
    }}
    forward . {upstream.address}
}}
"""


def mesh_of(server: Server) -> MeshHostsPlugin:
    assert server.config is not None
    (plugin,) = server.config.find("meshhosts")
    assert isinstance(plugin, MeshHostsPlugin)
    return plugin


def answers(reply: dns.message.Message) -> set[str]:
    """The answer section as ``TYPE rdata`` strings."""
    return {
        f"{dns.rdatatype.to_text(rrset.rdtype)} {rd.to_text()}"
        for rrset in reply.answer
        for rd in rrset
    }


async def ask(server: Server, name: str, rdtype: str = "A") -> tuple[int, set[str]]:
    reply = await query(server, name, rdtype)
    return reply.rcode(), answers(reply)


async def cache_counts(server: Server) -> tuple[float, float]:
    """(hits, misses) of the cache, from its metrics."""
    metrics = await scrape(server)
    return metrics.value("coredns_cache_hits_total"), metrics.value("coredns_cache_misses_total")


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("search corp.example\nnameserver 127.0.0.1\n")
    return tmp_path / "mesh.json", resolv


FORWARDED = {(f"n{i}.example.", "A"): [f"192.0.2.{i}"] for i in range(1, 41)}


# -- Every name form, before and after add, address move, removal ---------------------


NEWSVC_FORMS = ("newsvc.ns1.svc.cluster.local.", "newsvc.", "newsvc.ns1.", "newsvc.ns1.svc.")


async def test_every_name_form_follows_add_move_and_remove(files: tuple[Path, Path]) -> None:
    table, resolv = files
    ratings = kube("ratings", "ns1", "10.96.0.1", "fd00::1")
    write_table(table, ratings)
    async with (
        Upstream(records=dict(FORWARDED), host=UPSTREAM_HOST).running() as up,
        serve(corefile(table, resolv, up)) as server,
    ):
        mesh = mesh_of(server)
        asked = [
            *((name, "A") for name in NEWSVC_FORMS),
            ("host.wild.example.", "A"),
            ("2.0.96.10.in-addr.arpa.", "PTR"),
            ("3.0.96.10.in-addr.arpa.", "PTR"),
            ("ratings.ns1.svc.cluster.local.", "AAAA"),
            ("ratings.", "A"),
        ]
        # Before: the upstream's NXDOMAIN for the names not in the table, the table's
        # answers for ratings; asked twice, so the second round is answered by the cache.
        for _ in range(2):
            for name, rdtype in asked:
                await ask(server, name, rdtype)
        for name in NEWSVC_FORMS:
            assert await ask(server, name) == (NXDOMAIN, set())
        assert await ask(server, "host.wild.example.") == (NXDOMAIN, set())
        assert await ask(server, "2.0.96.10.in-addr.arpa.", "PTR") == (NXDOMAIN, set())
        assert await ask(server, "ratings.ns1.svc.cluster.local.", "AAAA") == (
            NOERROR,
            {"AAAA fd00::1"},
        )
        hits, _ = await cache_counts(server)
        assert hits >= len(asked) + 3  # held by the cache
        assert up.count("newsvc.") == 1 and up.count("host.wild.example.") == 1
        await ask(server, "n1.example.")

        # Added: the Service and a wildcard.
        write_table(
            table,
            ratings,
            kube("newsvc", "ns1", "10.96.0.2"),
            external("*.wild.example", "10.0.9.1"),
        )
        await mesh.check()
        for name in NEWSVC_FORMS:
            assert await ask(server, name) == (NOERROR, {"A 10.96.0.2"}), name
        assert await ask(server, "host.wild.example.") == (NOERROR, {"A 10.0.9.1"})
        assert await ask(server, "2.0.96.10.in-addr.arpa.", "PTR") == (
            NOERROR,
            {"PTR newsvc.ns1.svc.cluster.local."},
        )
        assert up.count("newsvc.") == 1  # answered by the table, not asked again

        # Moved: newsvc to another address, the wildcard too; ratings loses its IPv6.
        write_table(
            table,
            kube("ratings", "ns1", "10.96.0.1"),
            kube("newsvc", "ns1", "10.96.0.3"),
            external("*.wild.example", "10.0.9.2"),
        )
        await mesh.check()
        for name in NEWSVC_FORMS:
            assert await ask(server, name) == (NOERROR, {"A 10.96.0.3"}), name
        assert await ask(server, "host.wild.example.") == (NOERROR, {"A 10.0.9.2"})
        assert await ask(server, "3.0.96.10.in-addr.arpa.", "PTR") == (
            NOERROR,
            {"PTR newsvc.ns1.svc.cluster.local."},
        )
        assert await ask(server, "2.0.96.10.in-addr.arpa.", "PTR") == (NXDOMAIN, set())
        # The name still exists for A: NODATA for AAAA.
        assert await ask(server, "ratings.ns1.svc.cluster.local.", "AAAA") == (NOERROR, set())
        assert await ask(server, "ratings.", "A") == (NOERROR, {"A 10.96.0.1"})

        # Removed: every form is the upstream's NXDOMAIN again.
        write_table(table, kube("ratings", "ns1", "10.96.0.1"))
        await mesh.check()
        for name in NEWSVC_FORMS:
            assert await ask(server, name) == (NXDOMAIN, set()), name
        assert await ask(server, "host.wild.example.") == (NXDOMAIN, set())
        assert await ask(server, "3.0.96.10.in-addr.arpa.", "PTR") == (NXDOMAIN, set())
        # A forwarded name outside the changes was asked upstream once in all of it.
        assert await ask(server, "n1.example.") == (NOERROR, {"A 192.0.2.1"})
        assert up.count("n1.example.") == 1


async def test_short_name_denied_by_the_upstream_then_added(files: tuple[Path, Path]) -> None:
    """The issue's case: ``newsvc.`` cached as the upstream's NXDOMAIN (negative TTL 60 s)."""
    table, resolv = files
    write_table(table, kube("ratings", "ns1", "10.96.0.1"))
    async with (
        Upstream(host=UPSTREAM_HOST).running() as up,
        serve(corefile(table, resolv, up)) as server,
    ):
        assert await ask(server, "newsvc.") == (NXDOMAIN, set())
        hits_before, misses_before = await cache_counts(server)
        assert await ask(server, "newsvc.") == (NXDOMAIN, set())
        hits, misses = await cache_counts(server)
        assert (hits - hits_before, misses - misses_before) == (1, 0)  # a cache hit
        write_table(table, kube("ratings", "ns1", "10.96.0.1"), kube("newsvc", "ns1", "10.96.0.7"))
        await mesh_of(server).check()
        assert await ask(server, "newsvc.") == (NOERROR, {"A 10.96.0.7"})
        assert up.count("newsvc.") == 1


async def test_the_reload_loop_makes_the_next_query_current(files: tuple[Path, Path]) -> None:
    """The same through the reload timer: once the load is counted, the next query has it."""
    table, resolv = files
    write_table(table, kube("ratings", "ns1", "10.96.0.1"))
    async with (
        Upstream(host=UPSTREAM_HOST).running() as up,
        serve(corefile(table, resolv, up, reload="50ms")) as server,
    ):
        mesh = mesh_of(server)
        for _ in range(2):
            assert await ask(server, "newsvc.ns1.") == (NXDOMAIN, set())
        loads = mesh.loads
        write_table(table, kube("ratings", "ns1", "10.96.0.1"), kube("newsvc", "ns1", "10.96.0.7"))
        with trio.fail_after(20):
            while mesh.loads == loads:
                await trio.sleep(0.02)
        assert await ask(server, "newsvc.ns1.") == (NOERROR, {"A 10.96.0.7"})


async def test_a_change_while_the_upstream_is_asked_is_not_lost(files: tuple[Path, Path]) -> None:
    """A denial asked before the change but stored after it is not served after it."""
    table, resolv = files
    write_table(table, kube("ratings", "ns1", "10.96.0.1"))
    upstream = HeldUpstream({}, host=UPSTREAM_HOST)  # every name NXDOMAIN, with an SOA
    upstream.holding = True
    async with upstream.running(), serve(corefile(table, resolv, upstream)) as server:
        first: list[tuple[int, set[str]]] = []

        async def ask_late() -> None:
            first.append(await ask(server, "late."))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask_late)
            with trio.fail_after(10):
                while "late." not in upstream.arrived:
                    await trio.sleep(0.01)
            write_table(
                table, kube("ratings", "ns1", "10.96.0.1"), kube("late", "ns1", "10.96.0.8")
            )
            await mesh_of(server).check()
            upstream.release.set()  # the old denial is stored after the change
        assert first == [(NXDOMAIN, set())]  # asked before the change
        assert await ask(server, "late.") == (NOERROR, {"A 10.96.0.8"})
        assert upstream.arrived.count("late.") == 1


# -- Through autopath ------------------------------------------------------------------


async def test_search_expanded_names_follow_the_table(files: tuple[Path, Path]) -> None:
    """autopath's stored answers: a moved target, a name now in the table, an unrelated one."""
    table, resolv = files
    write_table(table, kube("db", "ns2", "10.96.2.1"))
    records = {
        ("newsvc.corp.example.", "A"): ["192.0.2.50"],
        ("other.corp.example.", "A"): ["192.0.2.51"],
    }
    async with (
        Upstream(records=records, host=UPSTREAM_HOST).running() as up,
        serve(corefile(table, resolv, up)) as server,
    ):
        db = "db.ns2.ns1.svc.cluster.local."  # a stub in ns1 searching for db.ns2
        newsvc = "newsvc.ns1.svc.cluster.local."  # ... and for newsvc
        other = "other.ns1.svc.cluster.local."
        for _ in range(2):
            assert await ask(server, db) == (
                NOERROR,
                {"CNAME db.ns2.svc.cluster.local.", "A 10.96.2.1"},
            )
            assert await ask(server, newsvc) == (
                NOERROR,
                {"CNAME newsvc.corp.example.", "A 192.0.2.50"},
            )
            assert await ask(server, other) == (
                NOERROR,
                {"CNAME other.corp.example.", "A 192.0.2.51"},
            )
        metrics = await scrape(server)
        assert metrics.value("coredns_autopath_success_total") == 6
        asked_other = up.count("other.corp.example.")
        hits, misses = await cache_counts(server)

        write_table(table, kube("db", "ns2", "10.96.2.9"), kube("newsvc", "ns1", "10.96.0.5"))
        await mesh_of(server).check()
        assert await ask(server, db) == (
            NOERROR,
            {"CNAME db.ns2.svc.cluster.local.", "A 10.96.2.9"},
        )
        assert await ask(server, newsvc) == (NOERROR, {"A 10.96.0.5"})
        # The unrelated search is still answered from autopath's store: nothing asked.
        hits_after, misses_after = await cache_counts(server)
        assert await ask(server, other) == (
            NOERROR,
            {"CNAME other.corp.example.", "A 192.0.2.51"},
        )
        assert up.count("other.corp.example.") == asked_other
        assert await cache_counts(server) == (hits_after, misses_after)
        assert (await scrape(server)).value("coredns_autopath_success_total") == 9
        assert misses_after > misses and hits_after >= hits


# -- What must not change -----------------------------------------------------------------


async def test_unrelated_forwarded_names_stay_cached(files: tuple[Path, Path]) -> None:
    """A change of the table costs the forwarded names it does not touch nothing."""
    table, resolv = files
    write_table(
        table, kube("ratings", "ns1", "10.96.0.1"), external("api.partner.example", "10.1.0.1")
    )
    async with (
        Upstream(records=dict(FORWARDED), host=UPSTREAM_HOST).running() as up,
        serve(corefile(table, resolv, up)) as server,
    ):
        mesh = mesh_of(server)
        for name, _ in FORWARDED:
            await ask(server, name)
        asked = sum(up.count(name) for name, _ in FORWARDED)
        assert asked == len(FORWARDED)
        changes = (
            (kube("ratings", "ns1", "10.96.0.2"), external("api.partner.example", "10.1.0.1")),
            (kube("ratings", "ns1", "10.96.0.2"), external("*.wild.example", "10.0.9.1")),
            (kube("svc1", "ns1", "10.96.0.3"),),
        )
        for rows in changes:
            write_table(table, *rows)
            await mesh.check()
            hits, misses = await cache_counts(server)
            for (name, _), rdatas in FORWARDED.items():
                assert await ask(server, name) == (NOERROR, {f"A {rdatas[0]}"})
            assert await cache_counts(server) == (hits + len(FORWARDED), misses)
        assert sum(up.count(name) for name, _ in FORWARDED) == len(FORWARDED)
        assert mesh.loads == 1 + len(changes)


async def test_a_broken_file_changes_nothing(files: tuple[Path, Path]) -> None:
    table, resolv = files
    write_table(table, kube("ratings", "ns1", "10.96.0.1"))
    async with (
        Upstream(records=dict(FORWARDED), host=UPSTREAM_HOST).running() as up,
        serve(corefile(table, resolv, up)) as server,
    ):
        mesh = mesh_of(server)
        names = ["ratings.", "newsvc.", "n1.example."]
        before = [await ask(server, name) for name in names]
        assert before[0] == (NOERROR, {"A 10.96.0.1"}) and before[1][0] == NXDOMAIN
        write_text(table, '{"table": {"newsvc.ns1.svc.cluster.local": oops')
        await mesh.check()
        assert mesh.load_failures == 1
        hits, misses = await cache_counts(server)
        assert [await ask(server, name) for name in names] == before
        assert await cache_counts(server) == (hits + len(names), misses)
        assert up.count("newsvc.") == 1 and up.count("n1.example.") == 1


# -- autoalloc ---------------------------------------------------------------------------


def service_entry(name: str, host: str) -> dict[str, Any]:
    """A ServiceEntry without addresses: autoalloc gives its host a pair."""
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": {"name": name, "namespace": "ns1", "creationTimestamp": "2024-01-01T00:00:00Z"},
        "spec": {
            "hosts": [host],
            "ports": [{"number": 5432, "name": "tcp", "protocol": "TCP"}],
            "resolution": "DNS",
        },
    }


async def test_an_allocation_is_seen_through_the_cache(tmp_path: Path) -> None:
    manifests = tmp_path / "mesh.yaml"
    write_text(manifests, yaml.safe_dump_all([service_entry("one", "one.partner.example")]))
    async with Upstream(host=UPSTREAM_HOST).running() as up:
        text = f""".:0 {{
    bind 127.0.0.1
    cache
    autoalloc {{
        http 127.0.0.1:0
    }}
    meshhosts {{
        file {manifests}
        reload 0
        fallthrough
    }}
    forward . {up.address}
}}
"""
        async with serve(text) as server:
            rcode, got = await ask(server, "one.partner.example.")
            assert rcode == NOERROR and len(got) == 1 and next(iter(got)).startswith("A 240.240.")
            for _ in range(2):
                assert await ask(server, "two.partner.example.") == (NXDOMAIN, set())
            docs = [
                service_entry("one", "one.partner.example"),
                service_entry("two", "two.partner.example"),
            ]
            write_text(manifests, yaml.safe_dump_all(docs))
            await mesh_of(server).check()
            rcode, two = await ask(server, "two.partner.example.")
            assert rcode == NOERROR and len(two) == 1 and next(iter(two)).startswith("A 240.240.")
            assert two != got
            assert await ask(server, "one.partner.example.") == (NOERROR, got)
            assert up.count("two.partner.example.") == 1


# -- The mechanism, without a server ------------------------------------------------------


def test_data_changes_generations_and_what_they_affect() -> None:
    changes = DataChanges()
    seen: list[DataChange] = []
    changes.subscribe(seen.append)
    assert changes.announce() is None and changes.generation == 0
    assert not changes.affects("a.example.", 0)
    first = changes.announce({"a.example."}, source="test")
    assert first is not None and first.generation == changes.generation == 1
    assert changes.affects("a.example.", 0)
    assert not changes.affects("b.example.", 0)
    assert not changes.affects("a.example.", 1)  # stamped after the change
    changes.announce(below={"wild.example."})
    assert changes.affects("x.y.wild.example.", 1) and changes.affects("wild.example.", 1)
    assert not changes.affects("example.", 1)
    assert changes.affects("a.example.", 0) and not changes.affects("a.example.", 1)
    changes.announce(below={"."})
    assert changes.affects("anything.", 2)
    assert [c.generation for c in seen] == [1, 2, 3]


def test_data_changes_too_old_a_stamp_counts_as_changed() -> None:
    changes = DataChanges()
    for i in range(MAX_LOGGED_CHANGES + 1):
        changes.announce({f"n{i}.example."})
    assert changes.affects("unrelated.example.", 0)  # beyond the log: outdated
    assert not changes.affects("unrelated.example.", 1)


def test_a_failing_listener_does_not_stop_the_announcement(
    caplog: pytest.LogCaptureFixture,
) -> None:
    changes = DataChanges()

    def broken(change: DataChange) -> None:
        raise RuntimeError("listener broke")

    seen: list[DataChange] = []
    changes.subscribe(broken)
    changes.subscribe(seen.append)
    assert changes.announce({"a."}) is not None
    assert len(seen) == 1 and "listener" in caplog.text


def entry(host: str, *ips: str, **kw: Any) -> HostEntry:
    return HostEntry(host, tuple(ips), **kw)


def names(old: Mapping[str, HostEntry], new: Mapping[str, HostEntry]) -> set[str]:
    changed, below = changed_names(old, new, DOMAIN, "ns1")
    return set(changed) | {f"below {b}" for b in below}


def test_changed_names_of_a_table() -> None:
    svc = entry(
        "svc.ns1.svc.cluster.local.",
        "10.0.0.1",
        registry=KUBERNETES,
        shortname="svc",
        namespace="ns1",
    )
    api = entry("api.example.", "10.0.0.2", registry=EXTERNAL)
    base = {e.host: e for e in (svc, api)}
    assert names(base, dict(base)) == set()
    moved = dict(base, **{api.host: entry("api.example.", "10.0.0.3")})
    assert names(base, moved) == {
        "api.example.",
        "example.",
        ".",
        "2.0.0.10.in-addr.arpa.",
        "3.0.0.10.in-addr.arpa.",
        "0.0.10.in-addr.arpa.",
        "0.10.in-addr.arpa.",
        "10.in-addr.arpa.",
        "in-addr.arpa.",
        "arpa.",
    }
    gone = {api.host: api}
    got = names(base, gone)
    assert {"svc.", "svc.ns1.", "svc.ns1.svc.", "svc.ns1.svc.cluster.local."} <= got
    assert "api.example." not in got
    wild = entry("*.wild.example.", "10.0.9.1")
    assert "below wild.example." in names(base, dict(base, **{wild.host: wild}))
    # An ExternalName pointing at a moved name changes with it.
    alias = entry("alias.example.", cname="api.example.")
    with_alias = dict(base, **{alias.host: alias})
    assert "alias.example." in names(with_alias, dict(moved, **{alias.host: alias}))
    assert "alias.example." not in names(with_alias, dict(with_alias))
