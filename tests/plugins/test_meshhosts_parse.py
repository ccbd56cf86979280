"""meshhosts: the Corefile directive and the prepared answers, without a server."""

from __future__ import annotations

import struct

import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from pycorefile import CorefileError, Directive, Fallthrough, Request, SetupContext, load_config
from pycorefile.corefile import ServerBlock, ZoneKey
from pycorefile.testing import make_query
from pycorefile_plugins.meshhosts import InlineEntry, MeshHostsConfig, parse_meshhosts
from pycorefile_plugins.meshhosts._answers import (
    MAX_ROTATIONS,
    Answer,
    Chase,
    EmptyName,
    PreparedTable,
    Rotation,
    Settings,
    name_wire,
)
from pycorefile_plugins.meshhosts._table import KUBERNETES, HostEntry, MeshTable


def ctx() -> SetupContext:
    block = ServerBlock((".",), (), "Corefile", 1)
    return SetupContext(block=block, keys=(ZoneKey("dns", "example.org.", 53),))


def line(name: str, *args: str) -> Directive:
    return Directive(name, args, "Corefile", 3, 9)


def meshhosts(*args: str, block: tuple[Directive, ...] | None = None) -> MeshHostsConfig:
    return parse_meshhosts([Directive("meshhosts", args, "Corefile", 2, 5, block)], ctx())


# -- The directive -------------------------------------------------------------------------


def test_defaults() -> None:
    config = meshhosts()
    assert config == MeshHostsConfig(zones=("example.org.",), source="Corefile:2")
    assert (config.ttl, config.reload, config.domain) == (30, 5.0, "cluster.local.")
    assert config.fallthrough is None and config.resolv_conf == "/etc/resolv.conf"
    assert config.max_file_size == 64 * 1024**2


@pytest.mark.parametrize(
    ("size", "size_bytes"),
    [("4096", 4096), ("512K", 512 * 1024), ("64MiB", 64 * 1024**2), ("1g", 1024**3)],
)
def test_max_file_size(size: str, size_bytes: int) -> None:
    assert meshhosts(block=(line("max_file_size", size),)).max_file_size == size_bytes


def test_every_option() -> None:
    config = meshhosts(
        "cluster.local",
        "10.0.0.0/8",
        block=(
            line("10.0.0.1", "A.example", "b.example."),
            line("fe80::1%eth0", "link.example"),
            line("file", "/a.yaml", "/b.json"),
            line("file", "/dir"),
            line("namespace", "NS1"),
            line("domain", "Mesh.Internal."),
            line("ttl", "60"),
            line("reload", "1m"),
            line("fallthrough", "example.org"),
            line("resolv_conf", "/tmp/resolv.conf"),
            line("max_file_size", "8M"),
        ),
    )
    assert config.zones == ("cluster.local.", "10.in-addr.arpa.")
    assert config.inline == (
        InlineEntry("10.0.0.1", ("a.example.", "b.example.")),
        InlineEntry("fe80::1", ("link.example.",)),
    )
    assert config.files == ("/a.yaml", "/b.json", "/dir")
    assert (config.namespace, config.domain, config.ttl, config.reload) == (
        "ns1",
        "mesh.internal.",
        60,
        60.0,
    )
    assert config.fallthrough == Fallthrough(("example.org.",))
    assert config.resolv_conf == "/tmp/resolv.conf"
    assert config.max_file_size == 8 * 1024**2
    assert meshhosts(block=(line("reload", "0"),)).reload == 0.0
    assert meshhosts(block=(line("fallthrough"),)).fallthrough == Fallthrough((".",))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("ttl x", "Corefile:3:9 - plugin/meshhosts: ttl needs a number of seconds"),
        ("ttl 70000", "Corefile:3:9 - plugin/meshhosts: ttl provided is invalid"),
        ("ttl", "Corefile:3:5 - plugin/meshhosts: Wrong argument count"),
        ("reload soon", "Corefile:3:12 - plugin/meshhosts: invalid duration"),
        ("namespace a_b", "Corefile:3:15 - plugin/meshhosts: invalid namespace"),
        ("domain bad..x", "Corefile:3:12 - plugin/meshhosts: invalid domain"),
        ("file", "Corefile:3:5 - plugin/meshhosts: Wrong argument count"),
        (
            "10.0.0.1",
            "Corefile:3:5 - plugin/meshhosts: inline entry 10.0.0.1 needs at least one name",
        ),
        ("10.0.0.1 ok.example bad..name", "Corefile:3:25 - plugin/meshhosts: 'bad..name'"),
        ("ttl 5\n    ttl 6", "Corefile:4:5 - plugin/meshhosts: 'ttl' given twice"),
        ("watch /x", "Corefile:3:5 - plugin/meshhosts: unknown property 'watch'"),
        ("max_file_size 0", "Corefile:3:19 - plugin/meshhosts: max_file_size needs a positive"),
        ("max_file_size 5T", "Corefile:3:19 - plugin/meshhosts: max_file_size needs a positive"),
        ("max_file_size -1", "Corefile:3:19 - plugin/meshhosts: max_file_size needs a positive"),
        (
            "kubernetes\n    labels app=web,tier in (a b",
            "Corefile:4:12 - plugin/meshhosts: unable to parse label selector value: "
            "'app=web,tier in (a b': unable to parse requirement 'tier in (a b'",
        ),
        (
            "kubernetes\n    labels a=b=c",
            "Corefile:4:12 - plugin/meshhosts: unable to parse label selector value: 'a=b=c'",
        ),
    ],
)
def test_errors_point_at_the_argument(body: str, message: str) -> None:
    text = f".:53 {{\n meshhosts {{\n    {body}\n }}\n}}\n"
    with pytest.raises(CorefileError) as caught:
        load_config(text, "Corefile")
    assert str(caught.value).startswith(message)


def test_once_per_block() -> None:
    with pytest.raises(CorefileError, match="once per Server Block"):
        load_config(".:53 {\n meshhosts\n meshhosts\n}\n", "Corefile")


# -- Prepared answers ----------------------------------------------------------------------


def request(name: str, rdtype: str = "A", **kwargs: bool) -> Request:
    return Request(make_query(name, rdtype, **kwargs).to_wire())


def prepared(entries: list[HostEntry], settings: Settings | None = None) -> PreparedTable:
    return PreparedTable(MeshTable({e.host: e for e in entries}), settings or Settings())


def render(table: PreparedTable, name: str, rdtype: str = "A") -> dns.message.Message:
    req = request(name, rdtype)
    found = table.lookup(req)
    assert isinstance(found, Answer | Rotation)
    return dns.message.from_wire(found.render(req.wire, req.name_end, req.edns, req.do))


KUBE = HostEntry(
    "web.ns1.svc.cluster.local.", ("10.0.0.1",), KUBERNETES, "web", "ns1", ("web.alias.",)
)


def test_names_of_an_entry_share_one_answer() -> None:
    table = prepared([KUBE], Settings(namespace="ns1"))
    found = {
        id(table.answers[name_wire(n) + struct.pack(">HH", 1, 1)])
        for n in ("web.ns1.svc.cluster.local.", "web.ns1.", "web.ns1.svc.", "web.", "web.alias.")
    }
    assert len(found) == 1


def test_wildcard_answers_fit_any_query_name() -> None:
    table = prepared([HostEntry("*.example.com.", ("192.0.2.1", "2001:db8::1"))])
    for name in ("a.example.com", "a-much-longer-label.b.c.example.com"):
        reply = render(table, name)
        assert reply.answer[0].name.to_text() == name + "."
        assert [rd.to_text() for rd in reply.answer[0]] == ["192.0.2.1"]
    # The literal wildcard name is a name of the table too.
    assert render(table, "*.example.com", "AAAA").answer[0][0].to_text() == "2001:db8::1"


def test_nodata_and_nxdomain_carry_the_soa() -> None:
    table = prepared([KUBE], Settings(zones=("cluster.local.",), ttl=45, serial=7))
    nodata = render(table, "web.ns1.svc.cluster.local", "AAAA")
    assert (nodata.rcode(), nodata.answer) == (dns.rcode.NOERROR, [])
    (soa,) = nodata.authority
    assert soa.name.to_text() == "cluster.local." and soa.ttl == 45
    assert (
        soa[0].to_text() == "ns.dns.cluster.local. hostmaster.cluster.local. 7 7200 1800 86400 45"
    )
    nx = render(table, "other.ns1.svc.cluster.local")
    assert nx.rcode() == dns.rcode.NXDOMAIN and nx.authority[0].name.to_text() == "cluster.local."
    # An empty non-terminal is NODATA (RFC 8020: NXDOMAIN would deny everything below).
    assert isinstance(table.lookup(request("ns1.svc.cluster.local")), EmptyName)
    # Outside the zones: not ours.
    assert table.lookup(request("web.example.org")) is None


def test_fallthrough_covers_other_types_and_unknown_names_only() -> None:
    settings = Settings(namespace="ns1", fallthrough=Fallthrough((".",)))
    table = prepared([KUBE], settings)
    assert table.lookup(request("unknown.example")) is None
    assert table.lookup(request("web", "MX")) is None
    # A known name lacking the family stays NODATA even with fallthrough.
    found = table.lookup(request("web", "AAAA"))
    assert isinstance(found, Answer) and found.rcode == dns.rcode.NOERROR


def test_rotations_are_bounded() -> None:
    addresses = tuple(f"10.0.{i // 250}.{i % 250 + 1}" for i in range(100))
    table = prepared([HostEntry("many.example.", addresses)])
    found = table.lookup(request("many.example"))
    assert isinstance(found, Rotation) and len(found.orders) == MAX_ROTATIONS
    firsts = {render(table, "many.example").answer[0][0].to_text() for _ in range(MAX_ROTATIONS)}
    assert len(firsts) == MAX_ROTATIONS


def test_external_name_chase() -> None:
    entry = HostEntry(
        "alias.ns1.svc.cluster.local.", (), KUBERNETES, "alias", "ns1", cname="a.example."
    )
    table = prepared([entry])
    found = table.lookup(request("alias.ns1.svc.cluster.local"))
    assert found == Chase(((None, "a.example."),), "a.example.", 30)
    reply = render(table, "alias.ns1.svc.cluster.local", "CNAME")
    assert [rd.to_text() for rd in reply.answer[0]] == ["a.example."]


def test_cname_loops_end() -> None:
    a = HostEntry(
        "a.ns.svc.cluster.local.", (), KUBERNETES, "a", "ns", cname="b.ns.svc.cluster.local."
    )
    b = HostEntry(
        "b.ns.svc.cluster.local.", (), KUBERNETES, "b", "ns", cname="a.ns.svc.cluster.local."
    )
    table = prepared([a, b])
    found = table.lookup(request("a.ns.svc.cluster.local"))
    assert isinstance(found, Chase) and len(found.chain) == 2


def test_dnspython_reads_every_prepared_answer() -> None:
    table = prepared(
        [KUBE, HostEntry("*.w.example.", ("192.0.2.1",)), HostEntry("v6.example.", ("::1",))],
        Settings(namespace="ns1"),
    )
    for key, found in table.answers.items():
        name_part, rdtype = key[:-4], struct.unpack(">H", key[-4:-2])[0]
        # A wildcard's answer is asked through a name below it.
        text = _text(name_part).replace("*", "below")
        req = request(text, dns.rdatatype.to_text(rdtype), edns=True)
        out = (found.orders[0] if isinstance(found, Rotation) else found).render(
            req.wire, req.name_end, req.edns, req.do
        )
        msg = dns.message.from_wire(out)
        assert msg.question[0].name.to_text() == text
        assert msg.edns == 0


def _text(wire: bytes) -> str:
    parts = []
    pos = 0
    while wire[pos]:
        parts.append(wire[pos + 1 : pos + 1 + wire[pos]].decode())
        pos += wire[pos] + 1
    return ".".join(parts) + "."
