"""forward: the Corefile syntax, without sockets (the pure parse function and setup errors)."""

from __future__ import annotations

from pathlib import Path

import dns.rcode
import pytest

from pycorefile import CorefileError, Directive, SetupError, load_config
from pycorefile.corefile import parse_corefile
from pycorefile_plugins.forward import (
    ForwardConfig,
    HealthSettings,
    TlsSettings,
    UpstreamAddress,
    parse_address,
    parse_forward,
    parse_resolv_conf,
)


def directives(body: str) -> list[Directive]:
    """The ``forward`` directives of a one-block Corefile with ``body`` inside."""
    blocks = parse_corefile(f".:53 {{\n{body}\n}}\n")
    return [d for d in blocks[0].directives if d.name == "forward"]


def one(body: str) -> ForwardConfig:
    configs = parse_forward(directives(body))
    assert len(configs) == 1
    return configs[0]


def u(host: str, port: int = 53, tls: bool = False, name: str | None = None) -> UpstreamAddress:
    return UpstreamAddress(host, port, tls, name)


# -- Valid directives ---------------------------------------------------------


@pytest.mark.parametrize(
    ("to", "expected"),
    [
        ("127.0.0.1", [u("127.0.0.1")]),
        ("127.0.0.1:5300", [u("127.0.0.1", 5300)]),
        ("dns://127.0.0.1:5300", [u("127.0.0.1", 5300)]),
        ("DNS://10.0.0.1", [u("10.0.0.1")]),
        ("::1", [u("::1")]),
        ("[::1]", [u("::1")]),
        ("[2001:DB8::1]:5353", [u("2001:db8::1", 5353)]),
        ("tls://9.9.9.9", [u("9.9.9.9", 853, True)]),
        ("tls://9.9.9.9%dns.quad9.net", [u("9.9.9.9", 853, True, "dns.quad9.net")]),
        ("tls://9.9.9.9%dns.quad9.net:8853", [u("9.9.9.9", 8853, True, "dns.quad9.net")]),
        ("tls://[2620:fe::fe%dns.quad9.net]:853", [u("2620:fe::fe", 853, True, "dns.quad9.net")]),
        ("1.1.1.1 1.0.0.1:53 1.1.1.1", [u("1.1.1.1"), u("1.0.0.1")]),
    ],
)
def test_upstream_forms(to: str, expected: list[UpstreamAddress]) -> None:
    assert list(one(f"forward . {to}").upstreams) == expected


def test_defaults_are_corednss() -> None:
    config = one("forward . 127.0.0.1")
    assert config.zone == "."
    assert config.ignored == ()
    assert (config.force_tcp, config.prefer_udp, config.failfast) == (False, False, False)
    assert config.expire == 10.0
    assert config.max_fails == 2
    assert config.policy == "random"
    assert config.health == HealthSettings(0.5, True, ".")
    assert config.max_concurrent == 0
    assert config.next_rcodes == frozenset()
    assert config.read_timeout == 2.0
    assert config.ssl_context is None


def test_every_option() -> None:
    config = one(
        """forward Example.ORG 127.0.0.1 {
            except Sub.Example.org other.example.org.
            force_tcp
            prefer_udp
            expire 30s
            max_fails 5
            tls_servername dns.example
            policy round_robin
            health_check 2s no_rec domain Probe.Example.
            max_concurrent 1000
            next NXDOMAIN ServFail
            failover refused
            failfast_all_unhealthy_upstreams
            read_timeout 500ms
            max_connect_attempts 3
            max_idle_conns 4
        }"""
    )
    assert config.zone == "example.org."
    assert config.ignored == ("sub.example.org.", "other.example.org.")
    assert config.force_tcp and config.prefer_udp and config.failfast
    assert config.expire == 30.0
    assert config.max_fails == 5
    assert config.tls_servername == "dns.example"
    assert config.policy == "round_robin"
    assert config.health == HealthSettings(2.0, False, "probe.example.")
    assert config.max_concurrent == 1000
    assert config.next_rcodes == {dns.rcode.NXDOMAIN, dns.rcode.SERVFAIL}
    assert config.failover_rcodes == {dns.rcode.REFUSED}
    assert config.read_timeout == 0.5
    assert config.max_connect_attempts == 3
    assert config.max_idle_conns == 4


def test_cidr_from_uses_the_first_reverse_zone() -> None:
    assert one("forward 10.0.0.0/15 127.0.0.1").zone == "0.10.in-addr.arpa."


def test_several_directives_keep_corefile_order() -> None:
    configs = parse_forward(
        directives("forward . 127.0.0.1\nforward example.org 127.0.0.2\nforward . 127.0.0.3")
    )
    assert [c.zone for c in configs] == [".", "example.org.", "."]


@pytest.mark.parametrize(
    ("name", "covered"),
    [
        ("example.org.", True),
        ("www.example.org.", True),
        ("sub.example.org.", False),
        ("a.sub.example.org.", False),
        ("notsub.example.org.", True),
        ("example.com.", False),
    ],
)
def test_covers_with_except(name: str, covered: bool) -> None:
    config = one("forward example.org 127.0.0.1 {\n except sub.example.org\n}")
    assert config.covers(name) is covered


def test_except_never_excludes_from_itself() -> None:
    config = one("forward example.org 127.0.0.1 {\n except example.org\n}")
    assert config.covers("example.org.")
    assert not config.covers("www.example.org.")


def test_resolv_conf(tmp_path: Path) -> None:
    path = tmp_path / "resolv.conf"
    path.write_text(
        "# comment\nsearch svc.cluster.local\nnameserver 127.0.0.53\n"
        "nameserver fe80::1%lo\nnameserver ::1\noptions ndots:5\nnameserver bogus\n"
    )
    assert parse_resolv_conf(str(path)) == [u("127.0.0.53"), u("fe80::1%lo"), u("::1")]
    config = one(f"forward . {path} 127.0.0.53:53")
    assert config.upstreams == (u("127.0.0.53"), u("fe80::1%lo"), u("::1"))


def test_tls_settings(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    assert one(f"forward . 127.0.0.1 {{\n tls {ca}\n}}").tls == TlsSettings(ca=str(ca))
    three = one(f"forward . 127.0.0.1 {{\n tls {ca} {ca} {ca}\n}}").tls
    assert three == TlsSettings(str(ca), str(ca), str(ca))
    # The files are only read when some upstream uses TLS: plain upstreams ignore them.
    assert one(f"forward . 127.0.0.1 {{\n tls {ca}\n}}").ssl_context is None


def test_tls_upstream_builds_a_verifying_context() -> None:
    config = one("forward . tls://127.0.0.1")
    assert config.ssl_context is not None
    assert config.ssl_context.check_hostname


def test_parse_address_rejects_names() -> None:
    with pytest.raises(ValueError, match="not an IP address"):
        parse_address("dns.google")


# -- Setup errors, as the user sees them --------------------------------------


def setup_error(body: str, tmp_path: Path | None = None) -> str:
    """The error loading a Corefile whose only block holds ``body``."""
    with pytest.raises(CorefileError) as info:
        load_config(f".:53 {{\n{body}\n}}\n")
    return str(info.value)


ERRORS = [
    ("forward .", "2:1", "Wrong argument count or unexpected line ending after 'forward'"),
    ("forward", "2:1", "Wrong argument count"),
    ("forward ex..ample 1.1.1.1", "2:9", "unable to normalize 'ex..ample'"),
    ("forward . 1.2.3.4.5", "2:11", "not an IP address or file: '1.2.3.4.5'"),
    ("forward . dns.google", "2:11", "not an IP address or file: 'dns.google'"),
    ("forward . 1.1.1.1 grpc://1.1.1.1", "2:19", "'grpc' is not supported as a destination"),
    ("forward . https://1.1.1.1", "2:11", "DNS over HTTPS (https://) upstreams are not supported"),
    ("forward . 1.1.1.1:99999", "2:11", "invalid port in '1.1.1.1:99999'"),
    ("forward . 1.1.1.1:dns", "2:11", "invalid port"),
    ("forward . [::1", "2:11", "not an IP address or file"),
    ("forward . tls://1.1.1.1%", "2:11", "empty TLS server name"),
    ("forward . /nonexistent/resolv.conf", "2:11", "not an IP address or file"),
    (
        "forward . " + " ".join(f"10.0.0.{i}" for i in range(1, 17)),
        "2:11",
        "more than 15 TOs configured",
    ),
    ("forward . 1.1.1.1 {\n bogus\n}", "3:2", "unknown property 'bogus'"),
    ("forward . 1.1.1.1 {\n force_tcp yes\n}", "3:12", "Wrong argument count"),
    ("forward . 1.1.1.1 {\n prefer_udp 1\n}", "3:13", "Wrong argument count"),
    ("forward . 1.1.1.1 {\n except\n}", "3:2", "Wrong argument count"),
    ("forward . 1.1.1.1 {\n except a..b\n}", "3:9", "unable to normalize 'a..b'"),
    ("forward . 1.1.1.1 {\n expire soon\n}", "3:9", "invalid duration 'soon'"),
    ("forward . 1.1.1.1 {\n expire\n}", "3:2", "Wrong argument count"),
    ("forward . 1.1.1.1 {\n max_fails x\n}", "3:12", "invalid max_fails 'x'"),
    ("forward . 1.1.1.1 {\n max_fails -1\n}", "3:12", "max_fails can't be negative"),
    ("forward . 1.1.1.1 {\n max_concurrent lots\n}", "3:17", "invalid max_concurrent"),
    ("forward . 1.1.1.1 {\n max_concurrent -5\n}", "3:17", "can't be negative"),
    ("forward . 1.1.1.1 {\n max_connect_attempts 1.5\n}", "3:23", "invalid"),
    ("forward . 1.1.1.1 {\n policy fastest\n}", "3:9", "unknown policy 'fastest'"),
    ("forward . 1.1.1.1 {\n policy\n}", "3:2", "Wrong argument count"),
    ("forward . 1.1.1.1 {\n health_check\n}", "3:2", "Wrong argument count"),
    ("forward . 1.1.1.1 {\n health_check often\n}", "3:15", "invalid duration 'often'"),
    ("forward . 1.1.1.1 {\n health_check 0s\n}", "3:15", "interval must be positive"),
    ("forward . 1.1.1.1 {\n health_check 1s rec\n}", "3:18", "health_check: unknown option rec"),
    (
        "forward . 1.1.1.1 {\n health_check 1s domain\n}",
        "3:18",
        "Wrong argument count or unexpected line ending after 'domain'",
    ),
    (
        "forward . 1.1.1.1 {\n health_check 1s domain a..b\n}",
        "3:25",
        "health_check: invalid domain name",
    ),
    ("forward . 1.1.1.1 {\n next\n}", "3:2", "Wrong argument count"),
    ("forward . 1.1.1.1 {\n next NXDOMAIN NOPE\n}", "3:16", "'NOPE' is not a valid rcode"),
    ("forward . 1.1.1.1 {\n failover NoError\n}", "3:11", "NoError cannot be used in failover"),
    ("forward . 1.1.1.1 {\n failfast_all_unhealthy_upstreams 1\n}", "3:35", "Wrong argument"),
    ("forward . 1.1.1.1 {\n tls /nonexistent/ca.pem\n}", "3:6", "tls: no such file"),
    ("forward . 1.1.1.1 {\n tls a b c d\n}", "3:12", "Wrong argument count"),
    ("forward . 1.1.1.1 {\n tls_servername\n}", "3:2", "Wrong argument count"),
    (
        "forward . tls://1.1.1.1%a.example {\n tls_servername b.example\n}",
        "2:11",
        "conflicts with tls_servername",
    ),
    ("forward . 1.1.1.1 {\n read_timeout 0\n}", "3:15", "read_timeout must be positive"),
    ("forward . 1.1.1.1 {\n max_age 10s\n}", "3:2", "'max_age' is not supported"),
    ("forward . 1.1.1.1 {\n resolver 8.8.8.8\n}", "3:2", "'resolver' is not supported"),
]


@pytest.mark.parametrize(("body", "where", "message"), ERRORS)
def test_setup_errors(body: str, where: str, message: str) -> None:
    text = setup_error(body)
    assert f"Corefile:{where} - plugin/forward: " in text
    assert message in text


def test_resolv_conf_without_nameservers_and_nothing_else(tmp_path: Path) -> None:
    path = tmp_path / "resolv.conf"
    path.write_text("search example.org\n")
    text = setup_error(f"forward . {path}")
    assert "Corefile:2:11 - plugin/forward: no valid upstream addresses found" in text
    assert f"no nameservers in '{path}'" in text


def test_an_empty_resolv_conf_is_skipped_as_coredns_does(tmp_path: Path) -> None:
    # CoreDNS's classifyToAddrs skips a file without nameservers; only no
    # upstream at all is an error.
    path = tmp_path / "resolv.conf"
    path.write_text("search example.org\noptions ndots:5\n")
    assert parse_resolv_conf(str(path)) == []
    config = one(f"forward . {path} 127.0.0.1")
    assert config.upstreams == (u("127.0.0.1"),)
    assert config.upstream_args == (2,)
    config = one(f"forward . 127.0.0.1 {path} tls://127.0.0.2")
    assert config.upstreams == (u("127.0.0.1"), u("127.0.0.2", 853, tls=True))


def test_tls_with_an_unreadable_ca(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not a certificate\n")
    text = setup_error(f"forward . tls://127.0.0.1 {{\n tls {ca}\n}}")
    assert "Corefile:2:1 - plugin/forward: tls: " in text


def test_several_forward_directives_are_allowed() -> None:
    config = load_config(".:53 {\n forward example.org 10.0.0.1\n forward . 10.0.0.2\n}\n")
    (plugin,) = config.find("forward")
    assert [c.zone for c in plugin.configs] == ["example.org.", "."]  # type: ignore[attr-defined]


# -- Forwarding to ourselves: refused at load when the block has the loop plugin ----------


@pytest.mark.parametrize(
    ("corefile", "arg"),
    [
        (".:5353 {\n forward . 127.0.0.1:5353\n loop\n}\n", "2:12"),
        (".:5353 {\n forward . 10.0.0.1 [::1]:5353\n loop\n}\n", "2:21"),
        (".:5353 {\n forward . 0.0.0.0:5353\n loop\n}\n", "2:12"),
        (".:5353 {\n forward . 10.0.0.1 10.0.0.1 127.0.0.1:5353\n loop\n}\n", "2:30"),
        (".:5353 {\n bind 127.0.0.9\n forward . 127.0.0.9:5353\n loop\n}\n", "3:12"),
        (".:53 {\n forward . 127.0.0.1\n loop\n}\n", "2:12"),
    ],
)
def test_with_loop_forwarding_to_our_own_address_is_refused(corefile: str, arg: str) -> None:
    with pytest.raises(CorefileError) as info:
        load_config(corefile)
    text = str(info.value)
    assert f"Corefile:{arg} - plugin/forward: forwarding loop: upstream" in text
    assert "is this server's own address" in text


@pytest.mark.parametrize(
    "corefile",
    [
        ".:5353 {\n forward . 127.0.0.1:53\n loop\n}\n",  # another port
        ".:5353 {\n bind 127.0.0.9\n forward . 127.0.0.1:5353\n loop\n}\n",  # another address
        ".:5353 {\n forward . tls://127.0.0.1:5353\n loop\n}\n",  # we serve no TLS there
    ],
)
def test_other_addresses_are_not_loops(corefile: str) -> None:
    load_config(corefile)


def test_setup_error_objects_point_at_the_argument() -> None:
    (d,) = directives("forward . 1.1.1.1 bogus.example")
    with pytest.raises(SetupError) as info:
        parse_forward([d])
    assert info.value.directive is d
    assert info.value.arg == 2
