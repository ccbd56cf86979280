"""template: CoreDNS's README examples as table tests against the real server, setup errors
with their positions, metrics, and the Go template subset."""

from __future__ import annotations

from dataclasses import dataclass, field

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from pycorefile import load_config
from pycorefile.testing import Upstream, make_query, query, scrape, serve
from pycorefile_plugins.template import parse_record
from pycorefile_plugins.template._gotemplate import (
    GoStruct,
    GoTemplate,
    TemplateExecError,
    TemplateSyntaxError,
)
from tests.plugins.setup_errors import assert_refused_at

UPSTREAM_RECORDS = {
    ("www.example.org.", "A"): ["192.0.2.80"],
    ("google.com.", "A"): ["192.0.2.100"],
    ("google.com.", "AAAA"): ["2001:db8::100"],
    ("other.example.com.", "A"): ["192.0.2.7"],
    ("svc.cluster.local.", "A"): ["10.96.0.10"],
    ("svc.cluster.local.", "AAAA"): ["fd00::10"],
}


@dataclass
class Case:
    """One query to a README example and what the reply must hold."""

    name: str
    rdtype: str = "A"
    rcode: int = dns.rcode.NOERROR
    answer: list[str] = field(default_factory=list)
    authority: list[str] = field(default_factory=list)
    additional: list[str] = field(default_factory=list)
    aa: bool = True
    rdclass: str = "IN"
    edns: bool = False
    ede: list[int] | None = None
    upstream_asked: int | None = None
    """How many queries for ``asked`` (default: the name asked) reached the upstream."""
    asked: str = ""


# Each example: the template lines of CoreDNS's README (forward to a test upstream) and cases.
EXAMPLES: dict[str, tuple[str, list[Case]]] = {
    "everything NXDOMAIN": (
        """
    template ANY ANY {
      rcode NXDOMAIN
    }""",
        [
            Case("anything.example.", "A", dns.rcode.NXDOMAIN),
            Case("www.example.org.", "MX", dns.rcode.NXDOMAIN, upstream_asked=0),
            # As CoreDNS: a block takes classes other than IN only with chaos or forward.
            Case("version.bind.", "TXT", dns.rcode.REFUSED, rdclass="CH", aa=False),
        ],
    ),
    ".invalid NXDOMAIN": (
        """
    forward . {upstream}
    template ANY ANY invalid {
      rcode NXDOMAIN
      authority "invalid. 60 {{ .Class }} SOA ns.invalid. hostmaster.invalid. (1 60 60 60 60)"
      ederror 21 "Blocked according to RFC2606"
    }""",
        [
            Case(
                "foo.invalid.",
                "A",
                dns.rcode.NXDOMAIN,
                authority=["invalid. 60 IN SOA ns.invalid. hostmaster.invalid. 1 60 60 60 60"],
            ),
            Case(
                "foo.invalid.",
                "AAAA",
                dns.rcode.NXDOMAIN,
                authority=["invalid. 60 IN SOA ns.invalid. hostmaster.invalid. 1 60 60 60 60"],
                edns=True,
                ede=[21],
            ),
            Case(
                "foo.invalid.",
                "TXT",
                dns.rcode.NXDOMAIN,
                authority=["invalid. 60 CH SOA ns.invalid. hostmaster.invalid. 1 60 60 60 60"],
                rdclass="CH",
            ),
            Case(
                "www.example.org.", "A", answer=["www.example.org. 300 IN A 192.0.2.80"], aa=False
            ),
        ],
    ),
    "search domain completions, by zone": (
        """
    forward . {upstream}
    template IN ANY example.com.dc1.example.com {
      rcode NXDOMAIN
      authority "{{ .Zone }} 60 IN SOA ns.example.com hostmaster.example.com (1 60 60 60 60)"
    }""",
        [
            Case(
                "something.example.com.dc1.example.com.",
                "A",
                dns.rcode.NXDOMAIN,
                authority=[
                    "example.com.dc1.example.com. 60 IN SOA ns.example.com. "
                    "hostmaster.example.com. 1 60 60 60 60"
                ],
            ),
            Case(
                "other.example.com.",
                "A",
                answer=["other.example.com. 300 IN A 192.0.2.7"],
                aa=False,
            ),
        ],
    ),
    "search domain completions, by regex": (
        r"""
    forward . {upstream}
    template IN ANY example.com {
      match "example\.com\.(dc1\.example\.com\.)$"
      rcode NXDOMAIN
      authority "{{ index .Match 1 }} 60 IN SOA ns.{{ index .Match 1 }} hostmaster.{{ index .Match 1 }} (1 60 60 60 60)"
      fallthrough
    }""",  # noqa: E501
        [
            Case(
                "something.example.com.dc1.example.com.",
                "A",
                dns.rcode.NXDOMAIN,
                authority=[
                    "dc1.example.com. 60 IN SOA ns.dc1.example.com. hostmaster.dc1.example.com. "
                    "1 60 60 60 60"
                ],
            ),
            Case(
                "other.example.com.",
                "A",
                answer=["other.example.com. 300 IN A 192.0.2.7"],
                aa=False,
                upstream_asked=1,
            ),
        ],
    ),
    "A and PTR for .example": (
        r"""
    forward . {upstream}
    template IN A example {
      match (^|[.])ip-(?P<a>[0-9]*)-(?P<b>[0-9]*)-(?P<c>[0-9]*)-(?P<d>[0-9]*)[.]example[.]$
      answer "{{ .Name }} 60 IN A {{ .Group.a }}.{{ .Group.b }}.{{ .Group.c }}.{{ .Group.d }}"
      fallthrough
    }
    template IN PTR in-addr.arpa {
      match ^(?P<d>[0-9]*)[.](?P<c>[0-9]*)[.](?P<b>[0-9]*)[.](?P<a>[0-9]*)[.]in-addr[.]arpa[.]$
      answer "{{ .Name }} 60 IN PTR ip-{{ .Group.a }}-{{ .Group.b }}-{{ .Group.c }}-{{ .Group.d }}.example."
    }""",  # noqa: E501
        [
            Case("ip-10-0-0-1.example.", "A", answer=["ip-10-0-0-1.example. 60 IN A 10.0.0.1"]),
            Case(
                "host.ip-10-0-0-1.example.",
                "A",
                answer=["host.ip-10-0-0-1.example. 60 IN A 10.0.0.1"],
            ),
            Case(
                "1.0.0.10.in-addr.arpa.",
                "PTR",
                answer=["1.0.0.10.in-addr.arpa. 60 IN PTR ip-10-0-0-1.example."],
            ),
            # The PTR template has no fallthrough: a name of its zone that no regex matches fails.
            Case("x.in-addr.arpa.", "PTR", dns.rcode.SERVFAIL, aa=False, upstream_asked=0),
            # A template for A only: other types of the zone go on (to the upstream: NXDOMAIN).
            Case(
                "ip-10-0-0-1.example.",
                "MX",
                dns.rcode.NXDOMAIN,
                authority=["example. 300 IN SOA ns.test. hostmaster.test. 1 3600 600 86400 60"],
                aa=False,
                upstream_asked=1,
            ),
        ],
    ),
    "parseInt of hexadecimal": (
        r"""
    forward . {upstream}
    template IN A example {
      match "^ip0a(?P<b>[a-f0-9]{2})(?P<c>[a-f0-9]{2})(?P<d>[a-f0-9]{2})[.]example[.]$"
      answer "{{ .Name }} 60 IN A 10.{{ parseInt .Group.b 16 8 }}.{{ parseInt .Group.c 16 8 }}.{{ parseInt .Group.d 16 8 }}"
      fallthrough
    }""",  # noqa: E501
        [
            Case("ip0a7b7b7b.example.", "A", answer=["ip0a7b7b7b.example. 60 IN A 10.123.123.123"]),
            Case("IP0A0102FF.example.", "A", answer=["ip0a0102ff.example. 60 IN A 10.1.2.255"]),
        ],
    ),
    "multiple patterns": (
        r"""
    forward . {upstream}
    template IN A example {
      match "^ip-(?P<a>10)-(?P<b>[0-9]*)-(?P<c>[0-9]*)-(?P<d>[0-9]*)[.]dc[.]example[.]$"
      match "^(?P<a>[0-9]*)[.](?P<b>[0-9]*)[.](?P<c>[0-9]*)[.](?P<d>[0-9]*)[.]ext[.]example[.]$"
      answer "{{ .Name }} 60 IN A {{ .Group.a}}.{{ .Group.b }}.{{ .Group.c }}.{{ .Group.d }}"
      fallthrough
    }""",
        [
            Case(
                "ip-10-1-2-3.dc.example.", "A", answer=["ip-10-1-2-3.dc.example. 60 IN A 10.1.2.3"]
            ),
            Case("4.3.2.1.ext.example.", "A", answer=["4.3.2.1.ext.example. 60 IN A 4.3.2.1"]),
        ],
    ),
    "A, MX and authoritative nameservers": (
        r"""
    forward . {upstream}
    template IN A example {
      match ^ip-10-(?P<b>[0-9]*)-(?P<c>[0-9]*)-(?P<d>[0-9]*)[.]example[.]$
      answer "{{ .Name }} 60 IN A 10.{{ .Group.b }}.{{ .Group.c }}.{{ .Group.d }}"
      authority  "example. 60 IN NS ns0.example."
      authority  "example. 60 IN NS ns1.example."
      additional "ns0.example. 60 IN A 203.0.113.8"
      additional "ns1.example. 60 IN A 198.51.100.8"
      fallthrough
    }
    template IN MX example {
      match ^ip-10-(?P<b>[0-9]*)-(?P<c>[0-9]*)-(?P<d>[0-9]*)[.]example[.]$
      answer "{{ .Name }} 60 IN MX 10 {{ .Name }}"
      additional "{{ .Name }} 60 IN A 10.{{ .Group.b }}.{{ .Group.c }}.{{ .Group.d }}"
      fallthrough
    }""",
        [
            Case(
                "ip-10-1-2-3.example.",
                "A",
                answer=["ip-10-1-2-3.example. 60 IN A 10.1.2.3"],
                authority=["example. 60 IN NS ns0.example.", "example. 60 IN NS ns1.example."],
                additional=[
                    "ns0.example. 60 IN A 203.0.113.8",
                    "ns1.example. 60 IN A 198.51.100.8",
                ],
            ),
            Case(
                "ip-10-1-2-3.example.",
                "MX",
                answer=["ip-10-1-2-3.example. 60 IN MX 10 ip-10-1-2-3.example."],
                additional=["ip-10-1-2-3.example. 60 IN A 10.1.2.3"],
            ),
        ],
    ),
    "fabricate a CNAME": (
        r"""
    template IN ANY foogle.com {
      match "^foogle\.com\.$"
      answer "foogle.com 60 IN CNAME google.com"
    }
    forward . {upstream}""",
        [
            Case(
                "foogle.com.",
                "A",
                answer=["foogle.com. 60 IN CNAME google.com.", "google.com. 300 IN A 192.0.2.100"],
                upstream_asked=1,
                asked="google.com.",
            ),
            Case(
                "foogle.com.",
                "AAAA",
                answer=[
                    "foogle.com. 60 IN CNAME google.com.",
                    "google.com. 300 IN AAAA 2001:db8::100",
                ],
            ),
            # Only A and AAAA queries chase the target, as CoreDNS.
            Case(
                "foogle.com.",
                "MX",
                answer=["foogle.com. 60 IN CNAME google.com."],
                upstream_asked=0,
                asked="google.com.",
            ),
        ],
    ),
    "AAAA answered locally in an IPv4-only cluster": (
        """
    template ANY AAAA {
      rcode NOERROR
    }
    forward . {upstream}""",
        [
            Case("svc.cluster.local.", "AAAA", upstream_asked=0),
            Case("google.com.", "AAAA", upstream_asked=0),
            Case(
                "svc.cluster.local.",
                "A",
                answer=["svc.cluster.local. 300 IN A 10.96.0.10"],
                aa=False,
                upstream_asked=1,
            ),
        ],
    ),
}


def lines(rrsets: list[dns.rrset.RRset]) -> list[str]:
    return [
        line
        for rrset in rrsets
        for line in rrset.to_text().splitlines()
        if dns.rdatatype.RdataType.make(rrset.rdtype) != dns.rdatatype.OPT
    ]


def normalized(texts: list[str]) -> list[str]:
    """Spaces collapsed, lowercased (a compressed owner takes the question's letter case)."""
    return [" ".join(text.split()).lower() for text in texts]


CASES = [(title, index) for title, (_, cases) in EXAMPLES.items() for index in range(len(cases))]


@pytest.mark.parametrize(("title", "index"), CASES, ids=[f"{t}-{i}" for t, i in CASES])
async def test_readme_example(title: str, index: int) -> None:
    template, cases = EXAMPLES[title]
    case = cases[index]
    upstream = Upstream(records=UPSTREAM_RECORDS, host="127.0.0.2")
    async with upstream.running():
        body = template.replace("{upstream}", upstream.address)
        async with serve(f".:0 {{\n    bind 127.0.0.1{body}\n}}\n") as server:
            q = make_query(case.name, case.rdtype, edns=case.edns)
            q.question[0].rdclass = dns.rdataclass.from_text(case.rdclass)
            asked = case.asked or case.name
            before = upstream.count(asked, case.rdtype)
            reply = await query(server, q)
    assert reply.rcode() == case.rcode
    assert bool(reply.flags & dns.flags.AA) == case.aa
    assert normalized(lines(reply.answer)) == normalized(case.answer)
    assert normalized(lines(reply.authority)) == normalized(case.authority)
    assert normalized(lines(reply.additional)) == normalized(case.additional)
    if case.ede is not None:
        assert [int(o.code) for o in reply.options if isinstance(o, dns.edns.EDEOption)] == case.ede
    if case.upstream_asked is not None:
        assert upstream.count(asked, case.rdtype) - before == case.upstream_asked


async def test_extended_error_goes_only_to_clients_that_sent_edns() -> None:
    corefile = """.:0 {
    bind 127.0.0.1
    template ANY ANY invalid {
      rcode NXDOMAIN
      ederror 21 "Blocked according to RFC2606"
    }
}
"""
    async with serve(corefile) as server:
        plain = await query(server, "a.invalid", "A")
        with_edns = await query(server, "a.invalid", "A", edns=True)
    assert plain.edns == -1 and plain.rcode() == dns.rcode.NXDOMAIN
    options = [o for o in with_edns.options if isinstance(o, dns.edns.EDEOption)]
    assert [(int(o.code), o.text) for o in options] == [(21, "Blocked according to RFC2606")]


async def test_cname_target_is_looked_up_through_another_server_block() -> None:
    """The lookup starts from the top: the target's zone is served by another block."""
    corefile = """alias.test:0 {
    bind 127.0.0.1
    template IN A alias.test {
      answer "{{ .Name }} 60 IN CNAME www.target.test."
    }
}
target.test:0 {
    bind 127.0.0.1
    template IN A target.test {
      answer "{{ .Name }} 30 IN A 192.0.2.53"
    }
}
"""
    async with serve(corefile) as server:
        reply = await query(server, "x.alias.test", "A", proto="tcp")
    assert normalized(lines(reply.answer)) == normalized(
        [
            "x.alias.test. 60 IN CNAME www.target.test.",
            "www.target.test. 30 IN A 192.0.2.53",
        ]
    )


async def test_a_cname_loop_ends_after_the_lookup_depth(caplog: pytest.LogCaptureFixture) -> None:
    corefile = """.:0 {
    bind 127.0.0.1
    template IN A loop.test {
      answer "{{ .Name }} 60 IN CNAME {{ .Name }}"
    }
}
"""
    async with serve(corefile) as server:
        reply = await query(server, "loop.test", "A", proto="tcp")
    assert reply.rcode() == dns.rcode.NOERROR
    cnames = [rr for rrset in reply.answer for rr in rrset]
    assert 1 <= len(cnames) <= 9  # the client's CNAME and one per nested lookup, no more
    assert "nested lookups" in caplog.text


async def test_metrics_count_matches_and_failures() -> None:
    corefile = """.:0 {
    bind 127.0.0.1
    prometheus 127.0.0.1:0
    template IN A good.test {
      answer "{{ .Name }} 60 IN A 192.0.2.1"
    }
    template IN A badrr.test {
      answer "{{ .Name }} 60 IN A not-an-address"
    }
    template IN A badtemplate.test {
      answer "{{ .Name }} 60 IN A {{ index .Match 7 }}"
    }
}
"""
    async with serve(corefile) as server:
        for _ in range(2):
            assert (await query(server, "good.test", "A")).rcode() == dns.rcode.NOERROR
        assert (await query(server, "badrr.test", "A")).rcode() == dns.rcode.SERVFAIL
        assert (await query(server, "badtemplate.test", "A")).rcode() == dns.rcode.SERVFAIL
        metrics = await scrape(server)
    assert metrics.value("coredns_template_matches_total", zone="good.test.", type="A") == 2
    assert (
        metrics.value("coredns_template_rr_failures_total", zone="badrr.test.", section="answer")
        == 1
    )
    assert (
        metrics.value(
            "coredns_template_template_failures_total",
            zone="badtemplate.test.",
            template="{{ .Name }} 60 IN A {{ index .Match 7 }}",
        )
        == 1
    )


async def test_a_template_answer_is_cached() -> None:
    corefile = """.:0 {
    bind 127.0.0.1
    prometheus 127.0.0.1:0
    cache 30
    template IN A cached.test {
      answer "{{ .Name }} 60 IN A 192.0.2.1"
    }
}
"""
    async with serve(corefile) as server:
        first = await query(server, "cached.test", "A")
        second = await query(server, "cached.test", "A")
        metrics = await scrape(server)
    assert first.answer[0].ttl == 30 and second.answer
    assert metrics.value("coredns_template_matches_total") == 1  # the second from the cache


# -- Setup errors, at their position --------------------------------------------------------

REJECTED = [
    ("template in A", "invalid query class in", "in"),
    ("template IN a", "invalid RR type a", "a"),
    ("template IN A {\n        match (?=x)\n    }", "look-around is not supported", "(?=x)"),
    ("template IN A {\n        match (a)\\1\n    }", "back-reference", "(a)\\1"),
    ('template IN A {\n        answer "{{ .Nmae }}"\n    }', "can't evaluate field Nmae", '"{{'),
    ('template IN A {\n        answer "{{ html .Name }}"\n    }', "'html' is not supported", '"{{'),
    ("template IN A {\n        rcode nxdomain\n    }", "unknown rcode nxdomain", "nxdomain"),
    ("template IN A {\n        var ip group(1)\n    }", "'var' is not supported yet", "var"),
    (
        "template IN A {\n        colour blue\n    }",
        "unexpected line ending after 'colour'",
        "colour",
    ),
]


@pytest.mark.parametrize(("text", "message", "token"), REJECTED)
def test_setup_refuses_at_the_position(text: str, message: str, token: str) -> None:
    assert_refused_at(text, message, token, "template", last=True)


def test_upstream_is_accepted_and_ignored() -> None:
    config = load_config(".:53 {\n    template IN A {\n        upstream 8.8.8.8\n    }\n}\n")
    assert [p.name for p in config.plugins] == ["template"]


# -- The Go template subset -----------------------------------------------------------------

DATA = GoStruct(
    "data",
    {"Name": "a.example.", "Match": ["a.example.", "a"], "Group": {"0": "a.example.", "x": "7"}},
    {"Meta": lambda *args: ""},
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{ .Name }}", "a.example."),
        ("{{.Name}}", "a.example."),
        ("{{ index .Match 1 }}", "a"),
        ("{{ .Group.x }}|{{ .Group.nothere }}", "7|<no value>"),
        ('{{ index .Group "nothere" }}|', "|"),
        ("{{ parseInt .Group.x 10 8 }}", "7"),
        ('{{ parseInt "0x1f" 0 16 }}', "31"),
        ('{{ printf "%s-%03d-%x" .Name 7 255 }}', "a.example.-007-ff"),
        ("{{ $n := .Name }}{{ $n }}", "a.example."),
        ('{{ if eq .Group.x "7" }}seven{{ else }}other{{ end }}', "seven"),
        ('{{ if ne .Group.x "7" }}a{{ else if eq .Name "a.example." }}b{{ else }}c{{ end }}', "b"),
        ("{{ range $i, $m := .Match }}{{ $i }}={{ $m }};{{ end }}", "0=a.example.;1=a;"),
        ("{{ with .Group.x }}[{{ . }}]{{ end }}", "[7]"),
        ("x {{- .Group.x -}} y", "x7y"),
        ("{{/* a comment */}}{{ len .Match }}", "2"),
        ('{{ .Name | printf "<%s>" }}', "<a.example.>"),
        ('{{ .Meta "kubernetes/client-namespace" }}|', "|"),
        ("{{ and 1 0 }} {{ or 0 2 }} {{ not true }}", "0 2 false"),
        ("{{ slice .Name 0 1 }}", "a"),
        ('{{ print 1 2 "x" }}', "1 2x"),
    ],
)
def test_go_template_renders_as_go(text: str, expected: str) -> None:
    schema = {"Name": None, "Match": None, "Group": None, "Meta": None}
    assert GoTemplate(text, schema).render(DATA) == expected


@pytest.mark.parametrize(
    "text",
    [
        '{{ define "x" }}{{ end }}',
        '{{ template "x" }}',
        "{{ js .Name }}",
        "{{ call .Name }}",
        "{{ 1.5 }}",
        "{{ 'a' }}",
        "{{ $undefined }}",
        "{{ nosuchfunc }}",
        "{{ if .Name }}never closed",
        "{{ end }}",
        "{{ .Name",
    ],
)
def test_go_template_refuses_at_setup(text: str) -> None:
    with pytest.raises(TemplateSyntaxError):
        GoTemplate(text, {"Name": None})


@pytest.mark.parametrize(
    "text",
    [
        "{{ index .Match 5 }}",
        "{{ parseInt .Name 10 8 }}",
        '{{ parseInt "300" 10 8 }}',
        "{{ .Group.x.y }}",
    ],
)
def test_go_template_fails_at_run_time_where_go_does(text: str) -> None:
    with pytest.raises(TemplateExecError):
        GoTemplate(text).render(DATA)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a.example. 60 IN A 192.0.2.1", "a.example. 60 IN A 192.0.2.1"),
        ("a.example. IN 60 A 192.0.2.1", "a.example. 60 IN A 192.0.2.1"),
        ("a.example A 192.0.2.1", "a.example. 3600 IN A 192.0.2.1"),
        ('x. 60 CH TXT "hello"', 'x. 60 CH TXT "hello"'),
        (
            "invalid. 60 IN SOA ns.invalid. hm.invalid. (1 60 60 60 60)",
            "invalid. 60 IN SOA ns.invalid. hm.invalid. 1 60 60 60 60",
        ),
        ("a 60 IN CNAME b", "a. 60 IN CNAME b."),
    ],
)
def test_records_read_as_miekg_reads_them(text: str, expected: str) -> None:
    assert parse_record(text).to_text() == expected


async def test_ipv4_only_cluster_answers_aaaa_locally_in_the_kubernetes_block_shape() -> None:
    """The usual Corefile: AAAA answered NOERROR with no records behind the cache, so no
    AAAA leaves the server, cached or not; A queries go on to forward."""
    upstream = Upstream(records=UPSTREAM_RECORDS, host="127.0.0.2")
    async with upstream.running():
        corefile = f""".:0 {{
    bind 127.0.0.1
    errors
    prometheus 127.0.0.1:0
    template IN AAAA . {{
        rcode NOERROR
    }}
    cache 30
    forward . {upstream.address}
}}
"""
        async with serve(corefile) as server:
            aaaa = [await query(server, "svc.cluster.local", "AAAA") for _ in range(3)]
            a = await query(server, "svc.cluster.local", "A")
            metrics = await scrape(server)
    for reply in aaaa:
        assert reply.rcode() == dns.rcode.NOERROR and not reply.answer
        assert reply.flags & dns.flags.AA
    assert upstream.count(rdtype="AAAA") == 0
    assert normalized(lines(a.answer)) == ["svc.cluster.local. 30 in a 10.96.0.10"]
    assert 1 <= metrics.value("coredns_template_matches_total", type="AAAA") <= 3
