"""forward's transports: large replies, TCP with connection reuse, DNS over TLS."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import dns.message
import dns.rcode
import pytest
import trio

from pycorefile import Server
from pycorefile.testing import Upstream, query, serve
from pycorefile_plugins.forward import ForwardPlugin

BIG = [f"192.0.2.{i}" for i in range(1, 101)]
"""100 A records: about 1.6 KB, more than any UDP client takes without TCP."""
RECORDS = {("a.example.", "A"): ["192.0.2.1"], ("big.example.", "A"): BIG}


def corefile(body: str) -> str:
    return f".:0 {{\n bind 127.0.0.1\n {body}\n}}\n"


@asynccontextmanager
async def serving(template: str, up: Upstream) -> AsyncIterator[Server]:
    """Start ``up``, then serve ``template`` with ``{0}`` its address."""
    async with up.running(), serve(corefile(template.format(up.address))) as server:
        yield server


def samples(server: Server, family: str) -> dict[tuple[tuple[str, str], ...], float]:
    assert server.config is not None
    (plugin,) = server.config.find("forward")
    assert isinstance(plugin, ForwardPlugin)
    out: dict[tuple[tuple[str, str], ...], float] = {}
    for fam in plugin.metrics():
        for s in fam.samples:
            if s.name == family:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


def addresses(msg: dns.message.Message) -> list[str]:
    return sorted(rd.to_text() for rrset in msg.answer for rd in rrset)


def protos(up: Upstream, name: str) -> list[str]:
    return [proto for n, _, proto in up.queries if n == name]


# -- Large replies ---------------------------------------------------------------


async def test_oversize_reply_is_truncated_for_udp_clients_and_whole_over_tcp() -> None:
    up = Upstream(records=dict(RECORDS), host="127.0.0.2")  # sends 1.6 KB even over UDP
    async with serving("forward . {0}", up) as server:
        plain = await query(server, "big.example", "A")
        edns = await query(server, "big.example", "A", edns=True, payload=4096)
        tcp = await query(server, "big.example", "A", proto="tcp")
    for truncated in (plain, edns):
        assert truncated.rcode() == dns.rcode.NOERROR  # never SERVFAIL
        assert truncated.flags & dns.flags.TC
    assert edns.payload == 1232
    assert not tcp.flags & dns.flags.TC
    assert addresses(tcp) == sorted(BIG)
    assert protos(up, "big.example.") == ["udp", "udp", "tcp"]


async def test_truncated_upstream_reply_is_retried_over_tcp_when_the_client_takes_more() -> None:
    up = Upstream(records=dict(RECORDS), host="127.0.0.2", truncate_udp=True)
    async with serving("forward . {0} {{\n prefer_udp\n}}", up) as server:
        tcp_client = await query(server, "big.example", "A", proto="tcp")
        udp_client = await query(server, "big.example", "A")
    assert addresses(tcp_client) == sorted(BIG)
    assert not tcp_client.flags & dns.flags.TC
    # The UDP client cannot take more than the upstream's 512 bytes: TC passes through.
    assert udp_client.flags & dns.flags.TC and udp_client.rcode() == dns.rcode.NOERROR
    assert protos(up, "big.example.") == ["udp", "tcp", "udp"]


# -- TCP ---------------------------------------------------------------------------


async def test_tcp_clients_are_forwarded_over_tcp() -> None:
    up = Upstream(records=dict(RECORDS), host="127.0.0.2")
    async with serving("forward . {0}", up) as server:
        r = await query(server, "a.example", "A", proto="tcp")
        u = await query(server, "a.example", "A")
    assert addresses(r) == addresses(u) == ["192.0.2.1"]
    assert protos(up, "a.example.") == ["tcp", "udp"]


async def test_force_tcp_reuses_one_connection() -> None:
    up = Upstream(records=dict(RECORDS), host="127.0.0.2")
    async with serving("forward . {0} {{\n force_tcp\n}}", up) as server:
        for _ in range(5):
            assert addresses(await query(server, "a.example", "A")) == ["192.0.2.1"]
        hits = samples(server, "coredns_proxy_conn_cache_hits_total")
        misses = samples(server, "coredns_proxy_conn_cache_misses_total")
    assert protos(up, "a.example.") == ["tcp"] * 5
    assert up.connections == 1  # the first query's connection, reused by the others
    key = (("proto", "tcp"), ("proxy_name", "forward"), ("to", up.address))
    assert misses[key] == 1 and hits[key] == 4


async def test_idle_connections_expire() -> None:
    up = Upstream(records=dict(RECORDS), host="127.0.0.2")
    async with serving("forward . {0} {{\n force_tcp\n expire 200ms\n}}", up) as server:
        await query(server, "a.example", "A")
        await query(server, "a.example", "A")
        used = up.connections
        await trio.sleep(0.35)  # longer than expire: the idle connection must not be reused
        await query(server, "a.example", "A")
    assert up.connections == used + 1


async def test_a_connection_closed_by_the_upstream_is_replaced_at_once() -> None:
    up = Upstream(records=dict(RECORDS), host="127.0.0.2", tcp_close_after=1)
    async with serving("forward . {0} {{\n force_tcp\n}}", up) as server:
        start = time.perf_counter()
        for _ in range(3):
            assert addresses(await query(server, "a.example", "A")) == ["192.0.2.1"]
        took = time.perf_counter() - start
        failures = samples(server, "coredns_forward_upstream_failures_total")
    assert took < 1.0, took
    assert up.connections >= 3
    assert failures == {}  # a stale pooled connection is not the upstream failing


async def test_a_silent_tcp_upstream_times_out() -> None:
    up = Upstream(records=dict(RECORDS), host="127.0.0.2", mode="silent")
    async with serving("forward . {0} {{\n force_tcp\n read_timeout 200ms\n}}", up) as server:
        r = await query(server, "a.example", "A")
    assert r.rcode() == dns.rcode.SERVFAIL
    assert protos(up, "a.example.") == ["tcp", "tcp"]


# -- DNS over TLS --------------------------------------------------------------------


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for ``dns.test`` and 127.0.0.4 (cert, key) in PEM files."""
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        subprocess.run(
            [
                "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj", "/CN=dns.test",
                "-addext", "subjectAltName=DNS:dns.test,IP:127.0.0.4",
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-keyout", str(key_path), "-out", str(cert_path),
            ],
            check=True,
            capture_output=True,
        )  # fmt: skip
        return cert_path, key_path
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dns.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("dns.test"), x509.IPAddress(ipaddress.ip_address("127.0.0.4"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, ssl.SSLContext]:
    """The CA file a client trusts, and the server context of a TLS upstream."""
    cert, key = make_certificate(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    return cert, server_ctx


@pytest.mark.parametrize(
    "template",
    [
        "forward . tls://{0} {{\n tls CA\n tls_servername dns.test\n}}",
        "forward . tls://127.0.0.4%dns.test:PORT {{\n tls CA\n}}",
        "forward . tls://{0} {{\n tls CA\n}}",  # verified against the IP address
    ],
)
async def test_dns_over_tls(template: str, certificate: tuple[Path, ssl.SSLContext]) -> None:
    ca, server_ctx = certificate
    up = Upstream(records=dict(RECORDS), host="127.0.0.4", tls=server_ctx)
    async with up.running():
        body = template.replace("CA", str(ca)).replace("PORT", str(up.port))
        async with serve(corefile(body.format(up.address))) as server:
            for _ in range(3):
                r = await query(server, "a.example", "A")
                assert addresses(r) == ["192.0.2.1"]
            big = await query(server, "big.example", "A", proto="tcp")
    assert addresses(big) == sorted(BIG)
    assert protos(up, "a.example.") == ["tcp"] * 3  # TLS on the TCP port
    assert up.connections == 1  # handshake once, then reused


async def test_dns_over_tls_refuses_a_certificate_for_another_name(
    certificate: tuple[Path, ssl.SSLContext],
) -> None:
    ca, server_ctx = certificate
    up = Upstream(records=dict(RECORDS), host="127.0.0.4", tls=server_ctx)
    template = "forward . tls://{0} {{\n tls CA\n tls_servername other.test\n}}"
    async with serving(template.replace("CA", str(ca)), up) as server:
        r = await query(server, "a.example", "A")
        failures = samples(server, "coredns_forward_upstream_failures_total")
    assert r.rcode() == dns.rcode.SERVFAIL
    assert up.count("a.example.") == 0  # nothing sent over an unverified connection
    assert failures[(("reason", "tls"), ("to", up.address))] >= 1


async def test_dns_over_tls_refuses_an_untrusted_certificate(
    certificate: tuple[Path, ssl.SSLContext],
) -> None:
    _, server_ctx = certificate
    up = Upstream(records=dict(RECORDS), host="127.0.0.4", tls=server_ctx)
    async with serving("forward . tls://{0} {{\n tls_servername dns.test\n}}", up) as server:
        r = await query(server, "a.example", "A")
    assert r.rcode() == dns.rcode.SERVFAIL
    assert up.count("a.example.") == 0
