# ruff: noqa: E501  (the tables read best one row per line)
"""kubernetes: the real server answering from a Kubernetes API server on loopback.

The API server is kmock's emulator (see ``kube_api``), reached over real
HTTP by the plugin's own client; objects are created and changed over HTTP,
so what the plugin sees comes through LIST and WATCH. The tables pin the
Kubernetes DNS specification as CoreDNS answers it: rcode, answer,
additional, TTLs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import dns.asyncquery
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest
import trio

from pycorefile import Server, kube
from pycorefile.testing import Upstream, make_query, query, serve
from pycorefile_plugins.kubernetes import KubernetesPlugin
from tests.plugins.kube_api import (
    ApiServer,
    Objects,
    api_server,
    endpoint_slice,
    namespace,
    pod,
    service,
)
from tests.plugins.test_health_ready import http_get

SOA = "cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local."
HTTP = [{"name": "http", "port": 80, "protocol": "TCP"}]


@pytest.fixture
def api() -> Iterator[ApiServer]:
    with api_server() as server:
        yield server


async def populate(objects: Objects) -> None:
    """A small cluster: every kind of Service the specification names."""
    for name in ("testns", "other"):
        await objects.create("namespaces", namespace(name))
    create = objects.create
    await create("services", service("testns", "svc1", ["10.0.0.1"], HTTP))
    await create("services", service("testns", "svc6", ["1234:abcd::1"], HTTP))
    await create("services", service("testns", "dual", ["10.0.0.3", "1234:abcd::3"], HTTP))
    await create("services", service("testns", "noports", ["10.0.0.4"], None))
    await create("services", service("testns", "hdls1", ["None"], HTTP))
    await create("services", service("testns", "hdlsempty", ["None"], HTTP))
    await create("services", service("testns", "empty", ["10.0.0.5"], HTTP))
    await create(
        "services",
        service("testns", "external", type_="ExternalName", external_name="ext.interwebs.test"),
    )
    await create(
        "services",
        service(
            "testns", "inzone", type_="ExternalName", external_name="svc1.testns.svc.cluster.local"
        ),
    )
    await create(
        "endpointslices",
        endpoint_slice(
            "testns",
            "svc1-abc",
            "svc1",
            [{"addresses": ["172.0.0.1"], "targetRef": {"kind": "Pod", "name": "svc1-pod"}}],
            [{"name": "http", "port": 8080, "protocol": "TCP"}],
        ),
    )
    await create(
        "endpointslices",
        endpoint_slice(
            "testns",
            "hdls1-abc",
            "hdls1",
            [
                {"addresses": ["172.0.0.2"], "hostname": "alpha"},
                {"addresses": ["172.0.0.3"], "conditions": {"ready": True}},
                {"addresses": ["172.0.0.4"], "conditions": {"ready": False}},
            ],
            [{"name": "http", "port": 8080, "protocol": "TCP"}],
        ),
    )
    await create(
        "endpointslices",
        endpoint_slice(
            "testns",
            "hdls1-v6",
            "hdls1",
            [{"addresses": ["1234:abcd::2"]}],
            [{"name": "http", "port": 8080, "protocol": "TCP"}],
            address_type="IPv6",
        ),
    )


def corefile(api: ApiServer, options: str = "", extra: str = "") -> str:
    return (
        "cluster.local:0 in-addr.arpa:0 ip6.arpa:0 {\n"
        "    bind 127.0.0.1\n"
        f"{extra}"
        "    kubernetes cluster.local in-addr.arpa ip6.arpa {\n"
        f"        endpoint {api.url}\n"
        f"{options}"
        "    }\n"
        "}\n"
    )


def section(rrsets: list[Any]) -> list[str]:
    """Records as text lines (owner TTL class type rdata), sorted; SOA serials cut off."""
    lines = []
    for rrset in rrsets:
        for line in rrset.to_text().splitlines():
            if " SOA " in line:
                line = " ".join(line.split()[:6])
            lines.append(line)
    return sorted(lines)


def plugin_of(server: Server) -> KubernetesPlugin:
    assert server.config is not None
    found = server.config.find("kubernetes")[0]
    assert isinstance(found, KubernetesPlugin)
    return found


async def eventually(check: Callable[[], Awaitable[bool]], seconds: float = 20.0) -> None:
    """Wait until ``check()`` holds, polling; fails after ``seconds``."""
    with trio.fail_after(seconds):
        while not await check():
            await trio.sleep(0.05)


async def rcode_of(server: Server, name: str, rdtype: str = "A") -> int:
    return int((await query(server, name, rdtype)).rcode())


# (name, type, rcode, answer, additional); NXDOMAIN and NODATA carry the SOA.
SPEC: list[tuple[str, str, int, list[str], list[str]]] = [
    # ClusterIP Services, dual-stack: the clusterIPs of the asked family.
    ("svc1.testns.svc.cluster.local.", "A", 0, ["svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1"], []),
    ("svc1.testns.svc.cluster.local.", "AAAA", 0, [SOA], []),
    ("svc6.testns.svc.cluster.local.", "AAAA", 0, ["svc6.testns.svc.cluster.local. 5 IN AAAA 1234:abcd::1"], []),
    ("svc6.testns.svc.cluster.local.", "A", 0, [SOA], []),
    ("dual.testns.svc.cluster.local.", "A", 0, ["dual.testns.svc.cluster.local. 5 IN A 10.0.0.3"], []),
    ("dual.testns.svc.cluster.local.", "AAAA", 0, ["dual.testns.svc.cluster.local. 5 IN AAAA 1234:abcd::3"], []),
    ("noports.testns.svc.cluster.local.", "A", 0, ["noports.testns.svc.cluster.local. 5 IN A 10.0.0.4"], []),
    # A ClusterIP Service without endpoints still answers (ignore empty_service is off).
    ("empty.testns.svc.cluster.local.", "A", 0, ["empty.testns.svc.cluster.local. 5 IN A 10.0.0.5"], []),
    # Headless: the ready endpoint addresses, per family; per-endpoint names.
    ("hdls1.testns.svc.cluster.local.", "A", 0, [
        "hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.2",
        "hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.3",
    ], []),
    ("hdls1.testns.svc.cluster.local.", "AAAA", 0, ["hdls1.testns.svc.cluster.local. 5 IN AAAA 1234:abcd::2"], []),
    ("alpha.hdls1.testns.svc.cluster.local.", "A", 0, ["alpha.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.2"], []),
    ("172-0-0-3.hdls1.testns.svc.cluster.local.", "A", 0, ["172-0-0-3.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.3"], []),
    ("1234-abcd--2.hdls1.testns.svc.cluster.local.", "AAAA", 0, ["1234-abcd--2.hdls1.testns.svc.cluster.local. 5 IN AAAA 1234:abcd::2"], []),
    ("172-0-0-4.hdls1.testns.svc.cluster.local.", "A", 3, [SOA], []),  # not ready
    ("hdlsempty.testns.svc.cluster.local.", "A", 3, [SOA], []),
    # Endpoint names resolve for ClusterIP Services too (as CoreDNS).
    ("172-0-0-1.svc1.testns.svc.cluster.local.", "A", 0, ["172-0-0-1.svc1.testns.svc.cluster.local. 5 IN A 172.0.0.1"], []),
    ("svc1-pod.svc1.testns.svc.cluster.local.", "A", 3, [SOA], []),  # endpoint_pod_names off
    # SRV: named ports, targets' addresses in the additional section.
    ("_http._tcp.svc1.testns.svc.cluster.local.", "SRV", 0,
     ["_http._tcp.svc1.testns.svc.cluster.local. 5 IN SRV 0 100 80 svc1.testns.svc.cluster.local."],
     ["svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1"]),
    ("svc1.testns.svc.cluster.local.", "SRV", 0,
     ["svc1.testns.svc.cluster.local. 5 IN SRV 0 100 80 svc1.testns.svc.cluster.local."],
     ["svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1"]),
    ("_http._tcp.hdls1.testns.svc.cluster.local.", "SRV", 0, [
        "_http._tcp.hdls1.testns.svc.cluster.local. 5 IN SRV 0 33 8080 1234-abcd--2.hdls1.testns.svc.cluster.local.",
        "_http._tcp.hdls1.testns.svc.cluster.local. 5 IN SRV 0 33 8080 172-0-0-3.hdls1.testns.svc.cluster.local.",
        "_http._tcp.hdls1.testns.svc.cluster.local. 5 IN SRV 0 33 8080 alpha.hdls1.testns.svc.cluster.local.",
    ], [
        "1234-abcd--2.hdls1.testns.svc.cluster.local. 5 IN AAAA 1234:abcd::2",
        "172-0-0-3.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.3",
        "alpha.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.2",
    ]),
    ("_https._tcp.svc1.testns.svc.cluster.local.", "SRV", 3, [SOA], []),
    ("_http._udp.svc1.testns.svc.cluster.local.", "SRV", 3, [SOA], []),
    ("external.testns.svc.cluster.local.", "SRV", 0, [SOA], []),
    # ExternalName: a CNAME; chased in the zone.
    ("external.testns.svc.cluster.local.", "CNAME", 0,
     ["external.testns.svc.cluster.local. 5 IN CNAME ext.interwebs.test."], []),
    ("inzone.testns.svc.cluster.local.", "A", 0, [
        "inzone.testns.svc.cluster.local. 5 IN CNAME svc1.testns.svc.cluster.local.",
        "svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1",
    ], []),
    ("svc1.testns.svc.cluster.local.", "CNAME", 0, [SOA], []),
    # PTR: a ClusterIP names its Service, an endpoint address its endpoint.
    ("1.0.0.10.in-addr.arpa.", "PTR", 0, ["1.0.0.10.in-addr.arpa. 5 IN PTR svc1.testns.svc.cluster.local."], []),
    ("2.0.0.172.in-addr.arpa.", "PTR", 0, ["2.0.0.172.in-addr.arpa. 5 IN PTR alpha.hdls1.testns.svc.cluster.local."], []),
    ("3.0.0.172.in-addr.arpa.", "PTR", 0, ["3.0.0.172.in-addr.arpa. 5 IN PTR 172-0-0-3.hdls1.testns.svc.cluster.local."], []),
    ("9.9.9.10.in-addr.arpa.", "PTR", 3, ["in-addr.arpa. 5 IN SOA ns.dns.in-addr.arpa. hostmaster.in-addr.arpa."], []),
    ("1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.c.b.a.4.3.2.1.ip6.arpa.", "PTR", 0,
     ["1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.c.b.a.4.3.2.1.ip6.arpa. 5 IN PTR svc6.testns.svc.cluster.local."], []),
    # Names that do not exist, and names that exist without records.
    ("nosvc.testns.svc.cluster.local.", "A", 3, [SOA], []),
    ("svc1.nons.svc.cluster.local.", "A", 3, [SOA], []),
    ("testns.svc.cluster.local.", "A", 0, [SOA], []),
    ("nons.svc.cluster.local.", "A", 3, [SOA], []),
    ("svc.cluster.local.", "A", 0, [SOA], []),
    ("pod.cluster.local.", "A", 0, [SOA], []),
    ("cluster.local.", "A", 0, [SOA], []),
    ("foo.bar.cluster.local.", "A", 3, [SOA], []),
    ("a.b.c.svc1.testns.svc.cluster.local.", "A", 3, [SOA], []),
    ("svc1.testns.svc.cluster.local.", "MX", 0, [SOA], []),
    ("svc1.testns.svc.cluster.local.", "TXT", 0, [SOA], []),
    ("svc1.testns.svc.cluster.local.", "HINFO", 0, [SOA], []),
    ("nosvc.testns.svc.cluster.local.", "HINFO", 3, [SOA], []),
    ("nosvc.testns.svc.cluster.local.", "SOA", 0, [SOA], []),  # CoreDNS: SOA below the apex is NODATA
    ("cluster.local.", "SOA", 0, [SOA], []),
    # TXT on a name without Services is NXDOMAIN even where A is NODATA (as CoreDNS).
    ("testns.svc.cluster.local.", "TXT", 3, [SOA], []),
    ("dns-version.cluster.local.", "TXT", 0, ['dns-version.cluster.local. 28800 IN TXT "1.1.0"'], []),
    # Pods are disabled by default.
    ("172-0-0-1.testns.pod.cluster.local.", "A", 3, [SOA], []),
]  # fmt: skip


async def test_dns_specification(api: ApiServer) -> None:
    await populate(Objects(api.url))
    async with serve(corefile(api)) as server:
        failures = []
        for name, rdtype, rcode, answer, additional in SPEC:
            reply = await query(server, name, rdtype)
            got_answer = section(reply.answer) or section(reply.authority)
            expected_answer = sorted(answer)
            got = (int(reply.rcode()), got_answer, section(reply.additional))
            if got != (rcode, expected_answer, sorted(additional)):
                failures.append(f"{name} {rdtype}: {got}")
            assert reply.flags & dns.flags.AA, name
        assert not failures, "\n".join(failures)


async def test_answers_keep_the_question_case(api: ApiServer) -> None:
    await populate(Objects(api.url))
    async with serve(corefile(api)) as server:
        for _ in range(2):  # the second reply comes from the prepared answer
            reply = await query(server, "SVC1.TestNS.svc.Cluster.LOCAL.", "A")
            assert reply.answer[0].name.to_text() == "SVC1.TestNS.svc.Cluster.LOCAL."
            assert [r.to_text() for r in reply.answer[0]] == ["10.0.0.1"]


async def test_axfr_is_refused(api: ApiServer) -> None:
    await populate(Objects(api.url))
    async with serve(corefile(api)) as server:
        reply = await query(server, "cluster.local.", "AXFR", proto="tcp")
        assert reply.rcode() == dns.rcode.REFUSED


async def test_externalname_outside_the_zone_is_chased_through_the_chain(api: ApiServer) -> None:
    await populate(Objects(api.url))
    upstream = Upstream(records={("ext.interwebs.test.", "A"): ["192.0.2.7"]}, host="127.0.0.2")
    async with upstream.running():
        text = (
            "cluster.local:0 {\n    bind 127.0.0.1\n"
            f"    kubernetes {{\n        endpoint {api.url}\n    }}\n"
            f"    forward . {upstream.address}\n}}\n"
        )
        async with serve(text) as server:
            reply = await query(server, "external.testns.svc.cluster.local.", "A")
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.answer[0].to_text() == (
        "external.testns.svc.cluster.local. 5 IN CNAME ext.interwebs.test."
    )
    assert reply.answer[1].name.to_text() == "ext.interwebs.test."
    assert [r.to_text() for r in reply.answer[1]] == ["192.0.2.7"]


# -- Options ------------------------------------------------------------------------------


OPTION_ROWS: list[tuple[str, str, str, int]] = [
    ("ttl 30", "svc1.testns.svc.cluster.local.", "A", 0),
    ("ignore empty_service", "empty.testns.svc.cluster.local.", "A", 3),
    ("ignore empty_service", "svc1.testns.svc.cluster.local.", "A", 0),
    ("noendpoints", "hdls1.testns.svc.cluster.local.", "A", 3),
    ("noendpoints", "svc1.testns.svc.cluster.local.", "A", 0),
    ("namespaces other", "svc1.testns.svc.cluster.local.", "A", 3),
    ("namespaces other", "other.svc.cluster.local.", "A", 0),
    ("namespaces other", "1.0.0.10.in-addr.arpa.", "PTR", 3),
    ("endpoint_pod_names", "svc1-pod.svc1.testns.svc.cluster.local.", "A", 0),
    ("pods insecure", "1-2-3-4.testns.pod.cluster.local.", "A", 0),
    ("pods insecure", "1-2-3-4.nons.pod.cluster.local.", "A", 3),
    ("pods insecure", "1234-abcd--9.testns.pod.cluster.local.", "AAAA", 0),
    ("pods insecure", "testns.pod.cluster.local.", "A", 0),
    ("pods verified", "172-0-0-9.testns.pod.cluster.local.", "A", 0),
    ("pods verified", "172-0-0-9.other.pod.cluster.local.", "A", 3),
    ("pods verified", "1-2-3-4.testns.pod.cluster.local.", "A", 3),
]


@pytest.mark.parametrize("options", sorted({row[0] for row in OPTION_ROWS}))
async def test_options(api: ApiServer, options: str) -> None:
    objects = Objects(api.url)
    await populate(objects)
    await objects.create("pods", pod("testns", "web-0", "172.0.0.9"))
    async with serve(corefile(api, f"        {options}\n")) as server:
        for option, name, rdtype, rcode in OPTION_ROWS:
            if option != options:
                continue
            reply = await query(server, name, rdtype)
            assert reply.rcode() == rcode, (options, name, rdtype, reply.to_text())
            if rcode == 0 and reply.answer:
                assert reply.answer[0].ttl == (30 if options == "ttl 30" else 5)
        if options == "ttl 30":
            reply = await query(server, "nosvc.testns.svc.cluster.local.", "A")
            assert reply.authority[0].ttl == 30  # the SOA's TTL is min(ttl, 300)
            assert reply.authority[0][0].minimum == 30


async def test_fallthrough_passes_name_errors_on(api: ApiServer) -> None:
    await populate(Objects(api.url))
    upstream = Upstream(records={("nosvc.testns.svc.cluster.local.", "A"): ["192.0.2.9"]},
                        host="127.0.0.2")  # fmt: skip
    async with upstream.running():
        text = (
            "cluster.local:0 {\n    bind 127.0.0.1\n"
            f"    kubernetes {{\n        endpoint {api.url}\n        fallthrough\n    }}\n"
            f"    forward . {upstream.address}\n}}\n"
        )
        async with serve(text) as server:
            fell = await query(server, "nosvc.testns.svc.cluster.local.", "A")
            kept = await query(server, "svc1.testns.svc.cluster.local.", "A")
            nodata = await query(server, "svc1.testns.svc.cluster.local.", "AAAA")
    assert [r.to_text() for r in fell.answer[0]] == ["192.0.2.9"]
    assert [r.to_text() for r in kept.answer[0]] == ["10.0.0.1"]
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer  # NODATA is no name error
    assert upstream.count("svc1.testns.svc.cluster.local.") == 0


# -- Watching -----------------------------------------------------------------------------


async def test_watch_changes_reach_answers(api: ApiServer) -> None:
    objects = Objects(api.url)
    await populate(objects)
    async with serve(corefile(api)) as server:
        name = "late.testns.svc.cluster.local."
        assert await rcode_of(server, name) == dns.rcode.NXDOMAIN
        await objects.create("services", service("testns", "late", ["10.0.0.50"], HTTP))

        async def answered(ip: str) -> bool:
            reply = await query(server, name, "A")
            return bool(reply.answer) and [r.to_text() for r in reply.answer[0]] == [ip]

        await eventually(lambda: answered("10.0.0.50"))
        ptr = await query(server, "50.0.0.10.in-addr.arpa.", "PTR")  # prepared now
        assert ptr.answer[0][0].to_text() == "late.testns.svc.cluster.local."
        await objects.patch(
            "services", "testns", "late", {"spec": {"clusterIP": "10.0.0.51", "clusterIPs": ["10.0.0.51"]}}
        )  # fmt: skip
        await eventually(lambda: answered("10.0.0.51"))
        # The change dropped the prepared reverse answer of the old address too.
        assert await rcode_of(server, "50.0.0.10.in-addr.arpa.", "PTR") == dns.rcode.NXDOMAIN
        await objects.delete("services", "testns", "late")

        async def gone() -> bool:
            return await rcode_of(server, name) == dns.rcode.NXDOMAIN

        await eventually(gone)
        # A new namespace: NXDOMAIN, then NODATA.
        assert await rcode_of(server, "fresh.svc.cluster.local.") == dns.rcode.NXDOMAIN
        await objects.create("namespaces", namespace("fresh"))

        async def nodata() -> bool:
            return await rcode_of(server, "fresh.svc.cluster.local.") == dns.rcode.NOERROR

        await eventually(nodata)
        # Endpoints becoming ready reach a headless Service.
        await objects.create("services", service("fresh", "db", ["None"], HTTP))
        await objects.create(
            "endpointslices",
            endpoint_slice("fresh", "db-1", "db", [{"addresses": ["172.1.0.1"], "hostname": "db-0"}], HTTP),
        )  # fmt: skip

        async def endpoint() -> bool:
            reply = await query(server, "db-0.db.fresh.svc.cluster.local.", "A")
            return bool(reply.answer)

        await eventually(endpoint)
        stats = {r.resource.plural: r.stats for r in plugin_of(server).reflectors}
        assert stats["services"].lists == 1  # changes came by WATCH, not by listing again
        assert stats["services"].events >= 3


async def test_gone_relists_and_deletes_what_is_missing(api: ApiServer) -> None:
    objects = Objects(api.url)
    await populate(objects)
    async with serve(corefile(api)) as server:
        name = "svc1.testns.svc.cluster.local."
        assert await rcode_of(server, name) == dns.rcode.NOERROR
        reflector = next(r for r in plugin_of(server).reflectors if r.resource.plural == "services")
        # The API restarts with svc1 gone and its history compacted: the next watch gets a
        # bookmark, then 410 Gone. kmock's watch would never send DELETED for svc1:
        # only the new LIST shows it is gone.
        api.stop()
        api._objects = [(key, obj) for key, obj in api._objects if key[2] != "svc1"]
        bookmark = {
            "type": "BOOKMARK",
            "object": {"kind": "Service", "metadata": {"resourceVersion": "77"}},
        }
        expired = {
            "type": "ERROR",
            "object": {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old resource version: 1 (77)"},
        }  # fmt: skip

        def script(emulator: Any) -> None:
            emulator["watch v1/services"][:1] << (bookmark, expired)

        api.restart(before=script)

        async def deleted() -> bool:
            return await rcode_of(server, name) == dns.rcode.NXDOMAIN

        await eventually(deleted)
        assert reflector.stats.gone == 1
        assert reflector.stats.bookmarks == 1
        assert reflector.stats.lists == 2
        assert await rcode_of(server, "svc6.testns.svc.cluster.local.", "AAAA") == 0
        assert plugin_of(server).ready()


async def test_api_outage_keeps_the_last_state_then_recovers(api: ApiServer) -> None:
    objects = Objects(api.url)
    await populate(objects)
    async with serve(corefile(api)) as server:
        plugin = plugin_of(server)
        assert plugin.ready()
        api.stop()
        for _ in range(3):
            reply = await query(server, "svc1.testns.svc.cluster.local.", "A")
            assert [r.to_text() for r in reply.answer[0]] == ["10.0.0.1"]
            await trio.sleep(0.3)
        assert plugin.ready()  # readiness never reverts (CoreDNS)
        assert any(r.stats.errors for r in plugin.reflectors)
        api.restart()
        await objects.create("services", service("testns", "after", ["10.0.0.60"], HTTP))

        async def seen() -> bool:
            return await rcode_of(server, "after.testns.svc.cluster.local.") == 0

        await eventually(seen, 60)


async def test_servfail_until_the_first_sync(api: ApiServer) -> None:
    await populate(Objects(api.url))
    api.stop()
    text = corefile(api, "        startup_timeout 200ms\n", extra="    ready 127.0.0.1:0\n")
    async with serve(text) as server:
        plugin = plugin_of(server)
        assert not plugin.ready()
        reply = await query(server, "svc1.testns.svc.cluster.local.", "A")
        assert reply.rcode() == dns.rcode.SERVFAIL
        assert section(reply.authority) == [SOA]
        address = server.http_address("127.0.0.1", 0)
        assert (await http_get(address, "/ready"))[0] == 503
        api.restart()

        async def synced() -> bool:
            return plugin.ready()  # every kind listed, not only the Services

        await eventually(synced, 60)
        assert await rcode_of(server, "svc1.testns.svc.cluster.local.") == 0
        assert (await http_get(address, "/ready"))[0] == 200
        assert await rcode_of(server, "nosvc.testns.svc.cluster.local.") == dns.rcode.NXDOMAIN


async def test_forbidden_resource_is_reported_and_not_ready(
    api: ApiServer, caplog: pytest.LogCaptureFixture
) -> None:
    await populate(Objects(api.url))
    api.refuse(
        "list",
        "pods",
        403,
        "Forbidden",
        'pods is forbidden: User "system:serviceaccount:kube-system:coredns" cannot list resource "pods"',
    )
    async with serve(
        corefile(api, "        pods verified\n        startup_timeout 500ms\n")
    ) as server:
        plugin = plugin_of(server)
        pods = next(r for r in plugin.reflectors if r.resource.plural == "pods")

        async def reported() -> bool:
            return "forbidden to list/watch pods" in pods.last_error

        await eventually(reported)
        assert not plugin.ready()
        assert "cannot list resource" in pods.last_error
    assert any("forbidden to list/watch pods" in r.getMessage() for r in caplog.records)


# -- autopath @kubernetes -------------------------------------------------------------------


async def ask_from(server: Server, source: str, name: str) -> dns.message.Message:
    q = make_query(name, "A")
    return await dns.asyncquery.udp(q, "127.0.0.1", port=server.port(), source=source, timeout=3)


async def test_autopath_uses_the_clients_namespace(api: ApiServer) -> None:
    objects = Objects(api.url)
    await populate(objects)
    await objects.create("services", service("other", "svc1", ["10.0.1.1"], HTTP))
    await objects.create("pods", pod("testns", "client-a", "127.0.0.2"))
    await objects.create("pods", pod("other", "client-b", "127.0.0.3"))
    text = corefile(api, "        pods verified\n", extra="    autopath @kubernetes\n")
    async with serve(text) as server:
        # A client of "other" asks "svc1" as its resolver does: other's svc1 first.
        reply = await ask_from(server, "127.0.0.3", "svc1.other.svc.cluster.local.")
        assert [r.to_text() for r in reply.answer[-1]] == ["10.0.1.1"]
        # It asks "svc1.testns": the search finds testns's svc1 behind a CNAME.
        reply = await ask_from(server, "127.0.0.3", "svc1.testns.other.svc.cluster.local.")
        assert reply.rcode() == dns.rcode.NOERROR
        assert reply.answer[0].rdtype == dns.rdatatype.CNAME
        assert reply.answer[0][0].target.to_text() == "svc1.testns.svc.cluster.local."
        assert [r.to_text() for r in reply.answer[-1]] == ["10.0.0.1"]
        # The same name from a client of testns is not its search: asked as it is.
        reply = await ask_from(server, "127.0.0.2", "svc1.testns.other.svc.cluster.local.")
        assert reply.rcode() == dns.rcode.NXDOMAIN
        # A client with no pod gets no autopath.
        reply = await ask_from(server, "127.0.0.4", "svc1.testns.other.svc.cluster.local.")
        assert reply.rcode() == dns.rcode.NXDOMAIN
        # testns's client searching from its namespace.
        reply = await ask_from(server, "127.0.0.2", "svc1.other.testns.svc.cluster.local.")
        assert reply.answer[0].rdtype == dns.rdatatype.CNAME
        assert [r.to_text() for r in reply.answer[-1]] == ["10.0.1.1"]


# -- Credentials ----------------------------------------------------------------------------


async def test_rotated_token_is_read_again(
    api: ApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await populate(Objects(api.url))
    monkeypatch.setattr(kube, "TOKEN_REREAD_SECONDS", 0.2)
    token = tmp_path / "token"
    token.write_text("first-token\n")
    config = tmp_path / "kubeconfig"
    config.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: test\n"
        "contexts:\n- name: test\n  context: {cluster: kmock, user: dns}\n"
        f"clusters:\n- name: kmock\n  cluster: {{server: '{api.url}'}}\n"
        "users:\n- name: dns\n  user: {tokenFile: token}\n"
    )
    text = corefile(api).replace(f"endpoint {api.url}", f"kubeconfig {config} test")
    async with serve(text) as server:
        assert plugin_of(server).ready()
        assert set(api.authorizations()) == {"Bearer first-token"}
        token.write_text("second-token\n")  # the kubelet rotates the projected token
        await trio.sleep(0.3)
        api.stop()
        api.restart()  # every watch connects again

        async def rotated() -> bool:
            return "Bearer second-token" in api.authorizations()

        await eventually(rotated, 60)
        assert "Bearer first-token" not in api.authorizations()


# -- One watch per kind for the process -------------------------------------------------------


async def test_blocks_and_reloads_share_the_watches(api: ApiServer) -> None:
    from pycorefile import load_config

    await populate(Objects(api.url))
    two_blocks = corefile(api) + (
        f"example.local:0 {{\n    bind 127.0.0.1\n    kubernetes {{\n        endpoint {api.url}\n    }}\n}}\n"
    )
    async with serve(two_blocks) as server:
        assert server.config is not None
        first, second = server.config.find("kubernetes")
        assert isinstance(first, KubernetesPlugin) and isinstance(second, KubernetesPlugin)
        assert [id(r) for r in first.reflectors] == [id(r) for r in second.reflectors]
        lists = sum(r.stats.lists for r in first.reflectors)
        assert lists == 3  # services, namespaces, endpointslices: once each
        # A reload: the new configuration is synced at once, from the same watches.
        config = await trio.to_thread.run_sync(lambda: load_config(corefile(api)))
        await server.reload(config)
        renewed = plugin_of(server)
        assert renewed is not first and renewed.ready()
        assert sum(r.stats.lists for r in renewed.reflectors) == lists
        assert await rcode_of(server, "svc1.testns.svc.cluster.local.") == dns.rcode.NOERROR


async def test_metrics_count_requests_once_for_shared_watches(api: ApiServer) -> None:
    await populate(Objects(api.url))
    text = corefile(api) + (
        f"example.local:0 {{\n    bind 127.0.0.1\n"
        f"    kubernetes {{\n        endpoint {api.url}\n    }}\n}}\n"
    )
    host = api.url.removeprefix("http://")
    requests = (
        "coredns_kubernetes_rest_client_requests_total",
        (("code", "200"), ("host", host), ("method", "GET")),
    )
    async with serve(text) as server:
        assert server.config is not None
        first, second = server.config.find("kubernetes")
        assert list(second.metrics()) == []  # the first plugin reports the shared watches

        def samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
            return {
                (sample.name, tuple(sorted(sample.labels.items()))): sample.value
                for family in first.metrics()
                for sample in family.samples
            }

        async def watching() -> bool:
            # One LIST and one WATCH per kind (services, namespaces, endpointslices),
            # for both blocks.
            return samples().get(requests) == 6

        await eventually(watching)
        found = samples()
    assert found[("pycorefile_kubernetes_synced", (("resource", "services"),))] == 1
    assert found[("pycorefile_kubernetes_lists_total", (("resource", "endpointslices"),))] == 1
    assert found[("pycorefile_kubernetes_watch_events_total", (("resource", "services"),))] >= 9


async def test_an_unreadable_list_is_an_error_not_a_crash(api: ApiServer) -> None:
    await populate(Objects(api.url))
    api.answer("list", "services", b"<html>not the API</html>")
    async with serve(corefile(api, "        startup_timeout 300ms\n")) as server:
        plugin = plugin_of(server)
        services = next(r for r in plugin.reflectors if r.resource.plural == "services")

        async def failed_twice() -> bool:
            return services.stats.errors >= 2  # and tried again, with backoff

        await eventually(failed_twice)
        assert "JSONDecodeError" in services.last_error
        assert not plugin.ready()
        reply = await query(server, "svc1.testns.svc.cluster.local.", "A")
        assert reply.rcode() == dns.rcode.SERVFAIL


async def test_changes_reach_clients_through_a_cache_in_front(api: ApiServer) -> None:
    objects = Objects(api.url)
    await populate(objects)
    # ttl 60 and a cache: without the plugin's announcements of what changed, what the
    # cache holds would be answered for a minute.
    async with serve(corefile(api, "        ttl 60\n", extra="    cache 300\n")) as server:
        name = "cached.testns.svc.cluster.local."
        assert await rcode_of(server, name) == dns.rcode.NXDOMAIN  # cached (denial)
        await objects.create("services", service("testns", "cached", ["10.0.0.70"], HTTP))

        async def answered(ip: str) -> bool:
            reply = await query(server, name, "A")
            return bool(reply.answer) and [r.to_text() for r in reply.answer[0]] == [ip]

        await eventually(lambda: answered("10.0.0.70"), 10)
        assert await answered("10.0.0.70")  # now from the cache
        await objects.patch(
            "services", "testns", "cached", {"spec": {"clusterIP": "10.0.0.71", "clusterIPs": ["10.0.0.71"]}}
        )  # fmt: skip
        await eventually(lambda: answered("10.0.0.71"), 10)
        ptr = await query(server, "71.0.0.10.in-addr.arpa.", "PTR")
        assert ptr.answer[0][0].to_text() == "cached.testns.svc.cluster.local."
