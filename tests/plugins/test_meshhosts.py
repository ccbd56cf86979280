"""meshhosts against the real server, over UDP and TCP.

The table comes from the files in ``data/meshhosts`` (manifests, NameTables in
JSON and YAML, a ``kind: List``) and inline lines. The next plugin, where one
is needed, is *forward* to a test ``Upstream``; the allocator is ``mhalloc``,
a stand-in for autoalloc that registers itself in its startup as autoalloc
does.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.reversename
import pytest
import trio

from pycorefile import Directive, Plugin, Server, SetupContext
from pycorefile._app import user_facing
from pycorefile._registry import Registry
from pycorefile.plugin import StartupError
from pycorefile.testing import Upstream, make_query, query, serve
from pycorefile_plugins.bind import BindPlugin
from pycorefile_plugins.forward import ForwardPlugin
from pycorefile_plugins.meshhosts import MeshHostsPlugin, ServiceEntryHost
from pycorefile_plugins.prometheus import PrometheusPlugin

from .test_prometheus import scrape

DATA = Path(__file__).parent / "data" / "meshhosts"
NOERROR, NXDOMAIN = dns.rcode.NOERROR, dns.rcode.NXDOMAIN
PROTOS = ("udp", "tcp")
FILES = " ".join(str(DATA / f) for f in ("manifests.yaml", "nametable.json", "nametable.yaml"))


class AllocPlugin(Plugin):
    """``mhalloc [fail]``: gives each qualifying host the next pair, as autoalloc would."""

    before = "meshhosts"
    serves_queries = False
    calls: list[list[ServiceEntryHost]] = []

    def __init__(self, ctx: SetupContext, fail: bool) -> None:
        self.ctx = ctx
        self.fail = fail
        self.explicit_seen: set[str] = set()

    @classmethod
    def setup(cls, directives: Sequence[Directive], ctx: SetupContext) -> AllocPlugin:
        return cls(ctx, directives[0].args == ("fail",))

    async def startup(self) -> None:
        mesh = self.ctx.plugin("meshhosts")
        assert isinstance(mesh, MeshHostsPlugin)
        mesh.use_allocator(self.allocate)

    def allocate(self, candidates: list[ServiceEntryHost]) -> dict[str, tuple[str, str]]:
        AllocPlugin.calls.append(candidates)
        if self.fail:
            raise RuntimeError("allocator broke")
        mesh = self.ctx.plugin("meshhosts")
        assert isinstance(mesh, MeshHostsPlugin)
        self.explicit_seen = mesh.explicit_addresses()
        out = {}
        n = 0
        for c in candidates:
            if c.resolution != "NONE" and not c.wildcard:
                n += 1
                out[c.host] = (f"240.240.0.{n}", f"2001:2::{n}")
        return out


def registry() -> Registry:
    return Registry.from_classes(
        {
            "bind": BindPlugin,
            "meshhosts": MeshHostsPlugin,
            "forward": ForwardPlugin,
            "mhalloc": AllocPlugin,
        }
    )


def corefile(body: str, *, zones: str = "", extra: str = "") -> str:
    return f""".:0 {{
    bind 127.0.0.1
    {extra}
    meshhosts {zones} {{
        {body}
    }}
}}
"""


MAIN = corefile(
    f"""file {FILES}
        file {DATA / "list.yaml"}
        namespace ns1
        ttl 60
        reload 0
        192.0.2.9 inline.test alias.inline.test
        2001:db8::9 inline.test"""
)


def plugin_of(server: Server) -> MeshHostsPlugin:
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


def soa_owner(reply: dns.message.Message) -> str | None:
    for rrset in reply.authority:
        if rrset.rdtype == dns.rdatatype.SOA:
            return str(rrset.name.to_text())
    return None


def ptr(address: str) -> str:
    return str(dns.reversename.from_address(address).to_text())


# (name, type, rcode, answer records, SOA owner in the authority section or None)
Case = tuple[str, str, int, set[str], str | None]
MAIN_CASES: list[Case] = [
    # Services: FQDN and the short forms (plain name only in our namespace ns1).
    ("productpage.ns1.svc.cluster.local", "A", NOERROR, {"A 10.96.0.10"}, None),
    ("productpage.ns1.svc.cluster.local", "AAAA", NOERROR, {"AAAA fd00:10:96::10"}, None),
    ("productpage.ns1", "A", NOERROR, {"A 10.96.0.10"}, None),
    ("productpage.ns1.svc", "A", NOERROR, {"A 10.96.0.10"}, None),
    ("productpage", "A", NOERROR, {"A 10.96.0.10"}, None),
    ("PRODUCTPAGE.ns1.SVC.cluster.local", "A", NOERROR, {"A 10.96.0.10"}, None),
    # Headless Service: ready endpoints, per-pod names.
    ("mysql.db.svc.cluster.local", "A", NOERROR, {"A 10.1.0.10", "A 10.1.0.11"}, None),
    ("mysql-0.mysql.db.svc.cluster.local", "A", NOERROR, {"A 10.1.0.10"}, None),
    ("mysql-1.mysql.db", "A", NOERROR, {"A 10.1.0.11"}, None),
    ("mysql-2.mysql.db.svc.cluster.local", "A", NXDOMAIN, set(), "cluster.local."),
    ("mysql", "A", NXDOMAIN, set(), "."),
    # A known name without the family: NODATA with an SOA, never NXDOMAIN.
    ("mysql.db.svc.cluster.local", "AAAA", NOERROR, set(), "cluster.local."),
    ("mysql.db", "AAAA", NOERROR, set(), "."),
    # ExternalName: a CNAME; followed here when the target is in the table.
    ("search.ns1.svc.cluster.local", "CNAME", NOERROR, {"CNAME search.example.org."}, None),
    (
        "db-alias.ns1.svc.cluster.local",
        "A",
        NOERROR,
        {"CNAME mysql.db.svc.cluster.local.", "A 10.1.0.10", "A 10.1.0.11"},
        None,
    ),
    (
        "db-alias.ns1.svc.cluster.local",
        "AAAA",
        NOERROR,
        {"CNAME mysql.db.svc.cluster.local."},
        "cluster.local.",
    ),
    # ServiceEntries: two for one host merge; NONE gives endpoint addresses.
    ("api.payments.example", "A", NOERROR, {"A 240.0.0.1", "A 240.0.0.5"}, None),
    ("legacy.corp.example", "A", NOERROR, {"A 192.168.5.1", "A 192.168.5.2"}, None),
    ("api.external.example", "A", NXDOMAIN, set(), "."),
    ("private.ns3.example", "A", NXDOMAIN, set(), "."),
    # Wildcards: any depth, the most specific wins, the apex is not matched.
    ("host.wild.example", "A", NOERROR, {"A 240.0.0.2"}, None),
    ("a.b.deep.wild.example", "A", NOERROR, {"A 240.0.0.3"}, None),
    ("x.deep.wild.example", "A", NOERROR, {"A 240.0.0.3"}, None),
    ("deep.wild.example", "A", NOERROR, {"A 240.0.0.2"}, None),
    ("wild.example", "A", NOERROR, set(), "."),
    ("host.wild.example", "AAAA", NOERROR, set(), "."),
    # NameTable JSON: alt hosts, a key with a trailing dot, another cluster domain.
    ("details.ns2.svc.cluster.local", "A", NOERROR, {"A 10.96.1.1"}, None),
    ("details.ns2", "A", NOERROR, {"A 10.96.1.1"}, None),
    ("details.legacy.internal", "A", NOERROR, {"A 10.96.1.1"}, None),
    ("details", "A", NXDOMAIN, set(), "."),
    ("ratings", "A", NOERROR, {"A 10.96.1.2", "A 10.96.1.3", "A 10.96.1.4"}, None),
    ("remote.ns1.svc.cluster.remote", "A", NOERROR, {"A 10.200.0.1"}, None),
    ("remote.ns1", "A", NXDOMAIN, set(), "."),
    ("mongo.db.example", "AAAA", NOERROR, {"AAAA fd00::db"}, None),
    ("mongo.db.example", "A", NOERROR, set(), "."),
    # NameTable YAML and kind: List.
    ("reviews.mesh.internal", "AAAA", NOERROR, {"AAAA fd00::2:1"}, None),
    ("reviews", "A", NOERROR, {"A 10.96.2.1"}, None),
    ("ledger.bank.example", "A", NOERROR, {"A 198.51.100.7"}, None),
    ("listed.ns2.svc.cluster.local", "A", NOERROR, {"A 10.96.3.1"}, None),
    ("listed.partner.example", "AAAA", NOERROR, {"AAAA 2001:db8::7"}, None),
    # Inline lines.
    ("inline.test", "A", NOERROR, {"A 192.0.2.9"}, None),
    ("inline.test", "AAAA", NOERROR, {"AAAA 2001:db8::9"}, None),
    ("ALIAS.inline.test", "A", NOERROR, {"A 192.0.2.9"}, None),
    # PTR for table addresses (pods before their Service; never a wildcard).
    (ptr("10.96.0.10"), "PTR", NOERROR, {"PTR productpage.ns1.svc.cluster.local."}, None),
    (ptr("fd00:10:96::10"), "PTR", NOERROR, {"PTR productpage.ns1.svc.cluster.local."}, None),
    (
        ptr("10.1.0.10"),
        "PTR",
        NOERROR,
        {"PTR mysql-0.mysql.db.svc.cluster.local.", "PTR mysql.db.svc.cluster.local."},
        None,
    ),
    (ptr("240.0.0.1"), "PTR", NOERROR, {"PTR api.payments.example."}, None),
    (ptr("2001:db8::9"), "PTR", NOERROR, {"PTR inline.test."}, None),
    (ptr("240.0.0.2"), "PTR", NXDOMAIN, set(), "."),
    # Other types and names without fallthrough: NODATA / NXDOMAIN with an SOA.
    ("productpage.ns1.svc.cluster.local", "MX", NOERROR, set(), "cluster.local."),
    ("ns1.svc.cluster.local", "A", NOERROR, set(), "cluster.local."),
    ("svc.cluster.local", "TXT", NOERROR, set(), "cluster.local."),
    ("nothing.ns1.svc.cluster.local", "A", NXDOMAIN, set(), "cluster.local."),
    ("www.example.org", "A", NXDOMAIN, set(), "."),
]


async def check_cases(server: Server, cases: list[Case], proto: str, ttl: int) -> list[str]:
    """Ask every case; the list of what went wrong (empty when all is right)."""
    problems = []
    for name, rdtype, rcode, expected, soa in cases:
        reply = await query(server, name, rdtype, proto=proto)
        got = (reply.rcode(), answers(reply), soa_owner(reply))
        if got != (rcode, expected, soa):
            problems.append(f"{name} {rdtype}: got {got}, expected {(rcode, expected, soa)}")
            continue
        if not reply.flags & dns.flags.AA:
            problems.append(f"{name} {rdtype}: AA not set")
        for rrset in reply.answer + reply.authority:
            if rrset.ttl != ttl:
                problems.append(f"{name} {rdtype}: TTL {rrset.ttl}")
        if reply.answer and reply.answer[0].name.to_text() != name.rstrip(".") + ".":
            problems.append(f"{name} {rdtype}: owner {reply.answer[0].name} not as asked")
    return problems


@pytest.mark.parametrize("proto", PROTOS)
async def test_answers_from_files_and_inline(proto: str) -> None:
    async with serve(MAIN, registry=registry()) as server:
        assert await check_cases(server, MAIN_CASES, proto, 60) == []


async def test_header_edns_and_case() -> None:
    async with serve(MAIN, registry=registry()) as server:
        q = make_query("ProductPage.NS1.svc.cluster.local", "A", edns=True, do=True, cd=True)
        reply = await query(server, q)
        assert reply.id == q.id
        assert reply.question[0].name.to_text() == "ProductPage.NS1.svc.cluster.local."
        assert reply.answer[0].name.to_text() == "ProductPage.NS1.svc.cluster.local."
        assert reply.flags & (
            dns.flags.QR | dns.flags.AA | dns.flags.RA | dns.flags.RD | dns.flags.CD
        )
        assert reply.flags & dns.flags.CD and reply.flags & dns.flags.RA
        assert reply.edns == 0 and reply.payload == 1232
        assert reply.ednsflags & dns.flags.DO
        plain = await query(server, make_query("productpage", "A", rd=False))
        assert plain.edns == -1
        assert not plain.flags & dns.flags.RD and not plain.flags & dns.flags.CD


@pytest.mark.parametrize("proto", PROTOS)
async def test_rotation(proto: str) -> None:
    async with serve(MAIN, registry=registry()) as server:
        firsts = []
        for _ in range(3):
            reply = await query(server, "ratings.ns1.svc.cluster.local", "A", proto=proto)
            assert answers(reply) == {"A 10.96.1.2", "A 10.96.1.3", "A 10.96.1.4"}
            firsts.append(reply.answer[0][0].to_text())
        assert sorted(firsts) == ["10.96.1.2", "10.96.1.3", "10.96.1.4"]


async def test_large_answer_truncates_over_udp(tmp_path: Path) -> None:
    endpoints = "\n".join(f"  - addresses: [10.2.{i // 200}.{i % 200 + 1}]" for i in range(80))
    (tmp_path / "big.yaml").write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: big, namespace: ns1}\n"
        "spec: {clusterIP: None}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
        "metadata: {name: big-1, namespace: ns1, labels: {kubernetes.io/service-name: big}}\n"
        f"addressType: IPv4\nendpoints:\n{endpoints}\n"
    )
    text = corefile(f"file {tmp_path / 'big.yaml'}\n namespace ns1")
    async with serve(text, registry=registry()) as server:
        udp = await query(server, "big", "A")
        assert udp.flags & dns.flags.TC
        tcp = await query(server, "big", "A", proto="tcp")
        assert len(answers(tcp)) == 80 and not tcp.flags & dns.flags.TC


# -- Fallthrough, zones, the next plugin -------------------------------------------------

UPSTREAM_RECORDS = {
    ("www.example.org.", "A"): ["198.51.100.1"],
    ("search.example.org.", "A"): ["198.51.100.2"],
    ("productpage.ns1.svc.cluster.local.", "TXT"): ['"from upstream"'],
    ("api.payments.example.", "A"): ["198.51.100.3"],
}


@pytest.mark.parametrize("proto", PROTOS)
async def test_fallthrough_to_the_next_plugin(proto: str) -> None:
    async with Upstream(records=UPSTREAM_RECORDS).running() as up:
        text = corefile(
            f"file {FILES}\n namespace ns1\n fallthrough", extra=f"forward . {up.address}"
        )
        async with serve(text, registry=registry()) as server:
            reply = await query(server, "www.example.org", "A", proto=proto)
            assert answers(reply) == {"A 198.51.100.1"}
            reply = await query(server, "productpage.ns1.svc.cluster.local", "TXT", proto=proto)
            assert answers(reply) == {'TXT "from upstream"'}
            # A known name lacking the family stays local: NODATA, upstream not asked.
            reply = await query(server, "mysql.db", "AAAA", proto=proto)
            assert (reply.rcode(), answers(reply)) == (NOERROR, set())
            assert up.count("mysql.db.") == 0
            # An ExternalName to a name outside the table: the CNAME, then the
            # rest of the chain's answer for the target.
            reply = await query(server, "Search.ns1.svc.cluster.local", "A", proto=proto)
            assert answers(reply) == {"CNAME search.example.org.", "A 198.51.100.2"}
            assert reply.answer[0].name.to_text() == "Search.ns1.svc.cluster.local."
            assert up.count("search.example.org.", "A") == 1
            # Table answers never reach the upstream.
            await query(server, "productpage", "A", proto=proto)
            assert up.count("productpage.") == 0


async def test_replies_are_credited_to_the_plugin_that_wrote_them() -> None:
    """An ExternalName chased through the next plugin is meshhosts' reply (its CNAME in
    front of the next plugin's answer); a name passed on is the next plugin's."""
    async with Upstream(records=UPSTREAM_RECORDS).running() as up:
        text = corefile(
            f"file {FILES}\n namespace ns1\n fallthrough",
            extra=f"prometheus 127.0.0.1:0\n    forward . {up.address}",
        )
        with_metrics = Registry.from_classes({
            "bind": BindPlugin, "meshhosts": MeshHostsPlugin, "forward": ForwardPlugin,
            "prometheus": PrometheusPlugin,
        })  # fmt: skip
        async with serve(text, registry=with_metrics) as server:
            chased = await query(server, "search.ns1.svc.cluster.local", "A")
            passed_on = await query(server, "www.example.org", "A")
            found, _ = await scrape(server)
    assert answers(chased) == {"CNAME search.example.org.", "A 198.51.100.2"}
    assert answers(passed_on) == {"A 198.51.100.1"}
    assert up.count("search.example.org.", "A") == 1
    responses = sorted(
        (dict(labels)["plugin"], dict(labels)["rcode"], count)
        for (family, labels), count in found.items()
        if family == "coredns_dns_responses_total"
    )
    assert responses == [("forward", "NOERROR", 1.0), ("meshhosts", "NOERROR", 1.0)]


async def test_fallthrough_zones() -> None:
    async with Upstream(records=UPSTREAM_RECORDS).running() as up:
        text = corefile(f"file {FILES}\n fallthrough example.org", extra=f"forward . {up.address}")
        async with serve(text, registry=registry()) as server:
            reply = await query(server, "www.example.org", "A")
            assert answers(reply) == {"A 198.51.100.1"}
            reply = await query(server, "nothing.ns1.svc.cluster.local", "A")
            assert reply.rcode() == NXDOMAIN
            assert up.count("nothing.ns1.svc.cluster.local.") == 0


async def test_names_outside_the_zones_go_next() -> None:
    async with Upstream(records=UPSTREAM_RECORDS).running() as up:
        text = corefile(f"file {FILES}", zones="cluster.local", extra=f"forward . {up.address}")
        async with serve(text, registry=registry()) as server:
            # A ServiceEntry host outside the plugin's zones is not answered here.
            reply = await query(server, "api.payments.example", "A")
            assert answers(reply) == {"A 198.51.100.3"}
            reply = await query(server, "nothing.cluster.local", "A")
            assert (reply.rcode(), soa_owner(reply)) == (NXDOMAIN, "cluster.local.")


async def test_external_name_without_a_next_answer_gives_the_cname() -> None:
    async with serve(MAIN, registry=registry()) as server:
        reply = await query(server, "search.ns1.svc.cluster.local", "A")
        assert (reply.rcode(), answers(reply)) == (NOERROR, {"CNAME search.example.org."})


# -- Reload -------------------------------------------------------------------------------


def write_table(path: Path, hosts: Mapping[str, str], mtime: int) -> None:
    """A NameTable of External hosts; ``mtime`` makes each version visibly newer."""
    entries = ", ".join(f'"{h}": {{"ips": ["{ip}"]}}' for h, ip in hosts.items())
    path.write_text(f'{{"table": {{{entries}}}}}\n')
    os.utime(path, ns=(mtime * 10**9, mtime * 10**9))


async def test_reload_good_broken_and_deleted_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    table = tmp_path / "table.json"
    write_table(table, {"a.example": "10.0.0.1"}, 1000)
    text = corefile(f"file {table}\n reload 0\n 192.0.2.9 inline.test")
    async with serve(text, registry=registry()) as server:
        plugin = plugin_of(server)
        assert (await query(server, "a.example", "A")).answer[0][0].to_text() == "10.0.0.1"
        await plugin.check()  # nothing changed
        assert plugin.loads == 1
        # A good change is picked up.
        write_table(table, {"a.example": "10.0.0.2", "b.example": "10.0.0.3"}, 1001)
        await plugin.check()
        assert answers(await query(server, "a.example", "A")) == {"A 10.0.0.2"}
        assert answers(await query(server, "b.example", "A", proto="tcp")) == {"A 10.0.0.3"}
        assert plugin.loads == 2
        # A broken file: logged with file and line, the last good table serves.
        table.write_text('{"table": {\n "a.example": {"ips": ["10.0.0.9"]},\n oops\n}}')
        os.utime(table, ns=(1002 * 10**9, 1002 * 10**9))
        with caplog.at_level(logging.ERROR, logger="pycorefile"):
            await plugin.check()
        assert f"{table}:3: invalid JSON" in caplog.text
        assert answers(await query(server, "a.example", "A")) == {"A 10.0.0.2"}
        assert plugin.load_failures == 1 and plugin.ready()
        # Not retried until the file changes again.
        await plugin.check()
        assert plugin.load_failures == 1
        # A deleted file: the last good table serves.
        caplog.clear()
        table.unlink()
        with caplog.at_level(logging.ERROR, logger="pycorefile"):
            await plugin.check()
        assert f"{table}:0: no such file or directory" in caplog.text
        assert answers(await query(server, "b.example", "A")) == {"A 10.0.0.3"}
        assert answers(await query(server, "inline.test", "A")) == {"A 192.0.2.9"}
        assert plugin.load_failures == 2
        # Back again: served.
        write_table(table, {"c.example": "10.0.0.4"}, 1003)
        await plugin.check()
        assert answers(await query(server, "c.example", "A")) == {"A 10.0.0.4"}
        assert (await query(server, "a.example", "A")).rcode() == NXDOMAIN


async def test_reload_loop_picks_up_changes(tmp_path: Path) -> None:
    table = tmp_path / "table.json"
    write_table(table, {"a.example": "10.0.0.1"}, 1000)
    text = corefile(f"file {table}\n reload 50ms")
    async with serve(text, registry=registry()) as server:
        write_table(table, {"a.example": "10.0.0.2"}, 1001)
        got: set[str] = set()
        with trio.move_on_after(5):
            while got != {"A 10.0.0.2"}:
                await trio.sleep(0.05)
                got = answers(await query(server, "a.example", "A"))
        assert got == {"A 10.0.0.2"}


async def test_directory_source_reload(tmp_path: Path) -> None:
    write_table(tmp_path / "one.json", {"one.example": "10.0.0.1"}, 1000)
    text = corefile(f"file {tmp_path}\n reload 0")
    async with serve(text, registry=registry()) as server:
        plugin = plugin_of(server)
        assert (await query(server, "two.example", "A")).rcode() == NXDOMAIN
        (tmp_path / "two.yaml").write_text("table: {two.example: {ips: [10.0.0.2]}}\n")
        await plugin.check()
        assert answers(await query(server, "two.example", "A")) == {"A 10.0.0.2"}
        # Removing a file from a directory is a change, not an error.
        (tmp_path / "one.json").unlink()
        await plugin.check()
        assert (await query(server, "one.example", "A")).rcode() == NXDOMAIN
        assert plugin.load_failures == 0


async def test_not_ready_until_the_first_table(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A file not written yet: the server starts, not ready, and serves it once it is there."""
    table = tmp_path / "table.yaml"
    text = corefile(f"file {table}\n reload 0\n 192.0.2.9 inline.test")
    with caplog.at_level(logging.ERROR, logger="pycorefile"):
        async with serve(text, registry=registry()) as server:
            plugin = plugin_of(server)
            assert f"{table}:0: no such file or directory; not ready" in caplog.text
            assert not plugin.ready()
            # Inline entries are served meanwhile.
            assert answers(await query(server, "inline.test", "A")) == {"A 192.0.2.9"}
            # Broken when it comes: still not ready, and the server keeps running.
            table.write_text("table:\n  a.example: {ips: [10.0.0.1]\n")
            await plugin.check()
            assert f"{table}:3: invalid YAML" in caplog.text and not plugin.ready()
            table.write_text("table:\n  a.example: {ips: [10.0.0.1]}\n")
            os.utime(table, ns=(1001 * 10**9, 1001 * 10**9))
            await plugin.check()
            assert plugin.ready()
            assert answers(await query(server, "a.example", "A")) == {"A 10.0.0.1"}


async def test_a_broken_file_at_start_refuses_to_start(tmp_path: Path) -> None:
    """A file that is there but cannot be used stops the start, naming file and line."""
    table = tmp_path / "table.yaml"
    table.write_text("table:\n  a.example: {ips: [10.0.0.1]\n")
    with pytest.raises(BaseException) as caught:  # trio wraps it in groups
        async with serve(corefile(f"file {table}"), registry=registry()):
            pass
    problem = user_facing(caught.value)
    assert isinstance(problem, StartupError)
    assert str(problem).startswith(f"plugin/meshhosts: {table}:3: invalid YAML")


async def test_ready_without_files() -> None:
    async with serve(corefile("192.0.2.9 inline.test"), registry=registry()) as server:
        assert plugin_of(server).ready()


# -- For other plugins -----------------------------------------------------------------------


async def test_search_path(tmp_path: Path) -> None:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 10.96.0.10\nsearch ns1.svc.cluster.local corp.example\n")
    text = corefile(f"namespace ns1\n resolv_conf {resolv}\n reload 0")
    async with serve(text, registry=registry()) as server:
        plugin = plugin_of(server)
        path = plugin.search_path()
        assert path == [
            "ns1.svc.cluster.local.",
            "svc.cluster.local.",
            "cluster.local.",
            "corp.example.",
        ]
        assert plugin.search_path() is path  # unchanged: the same list (autopath relies on it)
        resolv.write_text("search other.example\n")
        os.utime(resolv, ns=(1000 * 10**9, 1000 * 10**9))
        await plugin.check()
        assert plugin.search_path()[-1] == "other.example."
    text = corefile(f"domain mesh.internal\n resolv_conf {tmp_path / 'absent'}")
    async with serve(text, registry=registry()) as server:
        assert plugin_of(server).search_path() == ["svc.mesh.internal.", "mesh.internal."]


async def test_allocator_hook() -> None:
    AllocPlugin.calls.clear()
    text = corefile(f"file {FILES}\n namespace ns1\n reload 0", extra="mhalloc")
    async with serve(text, registry=registry()) as server:
        (candidates,) = AllocPlugin.calls
        assert [c.host for c in candidates] == [
            "legacy.corp.example",
            "api.external.example",
            "cdn.external.example",
        ]
        external = candidates[1]
        assert (external.namespace, external.name, external.resolution) == (
            "ns1",
            "external-api",
            "DNS",
        )
        assert external.created == "2024-03-01T10:00:00Z"
        assert external.labels == {"team": "payments"}
        cases: list[Case] = [
            ("api.external.example", "A", NOERROR, {"A 240.240.0.1"}, None),
            ("api.external.example", "AAAA", NOERROR, {"AAAA 2001:2::1"}, None),
            ("cdn.external.example", "A", NOERROR, {"A 240.240.0.2"}, None),
            (ptr("240.240.0.2"), "PTR", NOERROR, {"PTR cdn.external.example."}, None),
            (ptr("2001:2::1"), "PTR", NOERROR, {"PTR api.external.example."}, None),
            # resolution NONE with endpoints keeps its endpoints.
            ("legacy.corp.example", "A", NOERROR, {"A 192.168.5.1", "A 192.168.5.2"}, None),
        ]
        for proto in PROTOS:
            assert await check_cases(server, cases, proto, 30) == []
        plugin = plugin_of(server)
        explicit = plugin.explicit_addresses()
        assert {"10.96.0.10", "240.0.0.1", "10.96.1.1", "192.168.5.2"} <= explicit
        assert "240.240.0.1" not in explicit
        alloc = server.config.find("mhalloc")[0] if server.config else None
        assert isinstance(alloc, AllocPlugin) and alloc.explicit_seen == explicit
        assert [h.host for h in plugin.service_entry_hosts()] == [c.host for c in candidates]


async def test_allocator_failure_builds_without_allocations(
    caplog: pytest.LogCaptureFixture,
) -> None:
    text = corefile(f"file {FILES}\n reload 0", extra="mhalloc fail")
    with caplog.at_level(logging.ERROR, logger="pycorefile"):
        async with serve(text, registry=registry()) as server:
            assert "the allocator failed" in caplog.text
            assert plugin_of(server).ready()
            assert (await query(server, "api.external.example", "A")).rcode() == NXDOMAIN
            assert answers(await query(server, "api.payments.example", "A")) == {
                "A 240.0.0.1",
                "A 240.0.0.5",
            }


async def test_allocator_failure_keeps_the_pairs_served(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An allocator that fails on a later build does not take the served pairs away."""
    manifests = tmp_path / "manifests.yaml"
    manifests.write_text((DATA / "manifests.yaml").read_text())
    text = corefile(f"file {manifests}\n reload 0", extra="mhalloc")
    async with serve(text, registry=registry()) as server:
        plugin = plugin_of(server)
        assert server.config is not None
        (alloc,) = server.config.find("mhalloc")
        assert isinstance(alloc, AllocPlugin)
        served = answers(await query(server, "api.external.example", "A"))
        assert len(served) == 1 and next(iter(served)).startswith("A 240.240.0.")
        alloc.fail = True
        manifests.write_text(manifests.read_text() + "# changed\n")
        os.utime(manifests, ns=(1001 * 10**9, 1001 * 10**9))
        loads = plugin.loads
        with caplog.at_level(logging.ERROR, logger="pycorefile"):
            await plugin.check()
        assert plugin.loads == loads + 1
        assert "the allocator failed; building with the allocations served so far" in caplog.text
        assert answers(await query(server, "api.external.example", "A", proto="tcp")) == served


async def test_allocator_registered_late_rebuilds() -> None:
    text = corefile(f"file {FILES}\n reload 0")
    async with serve(text, registry=registry()) as server:
        plugin = plugin_of(server)
        assert (await query(server, "cdn.external.example", "A")).rcode() == NXDOMAIN

        def allocate(hosts: list[ServiceEntryHost]) -> dict[str, tuple[str, str]]:
            return {"cdn.external.example": ("240.240.9.9", "")}

        plugin.use_allocator(allocate)
        got: set[str] = set()
        with trio.move_on_after(5):
            while not got:
                await trio.sleep(0.02)
                got = answers(await query(server, "cdn.external.example", "A"))
        assert got == {"A 240.240.9.9"}
        reply = await query(server, "cdn.external.example", "AAAA")
        assert (reply.rcode(), answers(reply)) == (NOERROR, set())


async def test_metrics(tmp_path: Path) -> None:
    table = tmp_path / "t.json"
    write_table(table, {"a.example": "10.0.0.1", "b.example": "10.0.0.2"}, 1000)
    async with serve(corefile(f"file {table}\n reload 0"), registry=registry()) as server:
        plugin = plugin_of(server)
        table.write_text("{")
        os.utime(table, ns=(1001 * 10**9, 1001 * 10**9))
        await plugin.check()
        samples = {
            (s.name, s.labels["server"], s.labels["zones"]): s.value
            for family in plugin.metrics()
            for s in family.samples
        }
        assert samples[("coredns_meshhosts_entries", "dns://127.0.0.1:0", ".")] == 2
        assert samples[("coredns_meshhosts_reloads_total", "dns://127.0.0.1:0", ".")] == 1
        assert samples[("coredns_meshhosts_reload_failures_total", "dns://127.0.0.1:0", ".")] == 1
