"""grpc: forwarding a zone over gRPC, against a real gRPC server (grpcio) on loopback."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import grpc
import pytest
import trio

from pycorefile import CorefileError, load_config
from pycorefile.testing import query, scrape, serve

from .test_forward_transport import make_certificate

GRPC_HOST = "127.0.0.21"
OTHER_HOST = "127.0.0.22"


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_packet(body: bytes) -> bytes:
    """The test server's own reading of ``DnsPacket{bytes msg = 1}``."""
    assert body[0] == 0x0A, body[:4]
    length = shift = 0
    pos = 1
    while True:
        byte = body[pos]
        pos += 1
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    return body[pos : pos + length]


class GrpcUpstream:
    """CoreDNS's ``DnsService`` served by grpcio: answers from ``records`` and fails on cue.

    ``missing.`` gets status NOT_FOUND, ``broken.`` UNAVAILABLE, ``wrong.`` a reply
    to another question, ``slow.`` waits 6 s. Every other name not in ``records``
    is NXDOMAIN.
    """

    def __init__(self, host: str, records: dict[str, str], credentials: Any = None) -> None:
        self.host, self.records, self.credentials = host, records, credentials
        self.asked: list[str] = []
        self.failing = False
        self.port = 0
        self._server: grpc.Server | None = None

    def _query(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        q = dns.message.from_wire(_read_packet(request))
        name = q.question[0].name.to_text().lower()
        self.asked.append(name)
        if self.failing:
            context.abort(grpc.StatusCode.UNAVAILABLE, "failing on purpose")
        if name == "missing.":
            context.abort(grpc.StatusCode.NOT_FOUND, "no such name")
        if name == "broken.":
            context.abort(grpc.StatusCode.UNAVAILABLE, "backend down")
        if name == "slow.":
            time.sleep(6)
        reply = dns.message.make_response(q)
        if name == "wrong.":
            reply.question = [
                dns.rrset.RRset(dns.name.from_text("other."), dns.rdataclass.IN, dns.rdatatype.A)
            ]
        elif name in self.records:
            reply.answer.append(dns.rrset.from_text(name, 60, "IN", "A", self.records[name]))
        else:
            reply.set_rcode(dns.rcode.NXDOMAIN)
        wire = reply.to_wire()
        return b"\x0a" + _varint(len(wire)) + wire

    def start(self) -> None:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        handler = grpc.method_handlers_generic_handler(
            "coredns.dns.DnsService", {"Query": grpc.unary_unary_rpc_method_handler(self._query)}
        )
        server.add_generic_rpc_handlers((handler,))
        address = f"{self.host}:{self.port}"
        if self.credentials is None:
            self.port = server.add_insecure_port(address)
        else:
            self.port = server.add_secure_port(address, self.credentials)
        server.start()
        self._server = server

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None).wait(5)
            self._server = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@contextmanager
def grpc_upstream(
    host: str = GRPC_HOST, records: dict[str, str] | None = None, credentials: Any = None
) -> Iterator[GrpcUpstream]:
    upstream = GrpcUpstream(host, records or {"www.example.org.": "192.0.2.1"}, credentials)
    upstream.start()
    try:
        yield upstream
    finally:
        upstream.stop()


def a_records(reply: dns.message.Message) -> list[str]:
    return sorted(rd.to_text() for rrset in reply.answer for rd in rrset)


async def test_queries_go_over_grpc_and_the_reply_comes_back_unchanged() -> None:
    with grpc_upstream() as up:
        async with serve(f". {{\n  grpc . {up.address}\n}}\n") as server:
            q = dns.message.make_query("www.example.org.", "A", id=4321)
            reply = await query(server, q)
            assert reply.id == 4321 and a_records(reply) == ["192.0.2.1"]
            assert reply.answer[0].ttl == 60
            tcp = await query(server, "www.example.org.", proto="tcp")
            assert a_records(tcp) == ["192.0.2.1"]
            nx = await query(server, "nothing.example.org.")
            assert nx.rcode() == dns.rcode.NXDOMAIN
            # gRPC status NOT_FOUND is NXDOMAIN, as in CoreDNS.
            assert (await query(server, "missing.")).rcode() == dns.rcode.NXDOMAIN
            assert up.asked.count("www.example.org.") == 2


async def test_many_queries_share_one_connection_concurrently() -> None:
    records = {f"n{i}.example.org.": f"192.0.2.{i}" for i in range(1, 41)}
    with grpc_upstream(records=records) as up:
        async with serve(f". {{\n  grpc . {up.address}\n}}\n") as server:
            answers: dict[str, list[str]] = {}

            async def ask(name: str) -> None:
                answers[name] = a_records(await query(server, name, timeout=10))

            with trio.fail_after(30):
                async with trio.open_nursery() as nursery:
                    for name in records:
                        nursery.start_soon(ask, name)
            assert answers == {name: [address] for name, address in records.items()}


async def test_a_failing_upstream_is_skipped_and_metrics_count_each() -> None:
    with grpc_upstream() as first, grpc_upstream(OTHER_HOST) as second:
        first.failing = True  # every call: status UNAVAILABLE
        corefile = (
            f". {{\n  prometheus 127.0.0.1:0\n  grpc . {first.address} {second.address} {{\n"
            "    policy sequential\n  }\n}\n"
        )
        async with serve(corefile) as server:
            for _ in range(2):
                assert a_records(await query(server, "www.example.org.")) == ["192.0.2.1"]
            assert first.asked == second.asked == ["www.example.org."] * 2
            metrics = await scrape(server)
            for up in (first, second):
                assert metrics.value("coredns_grpc_requests_total", to=up.address) == 2
            answered = metrics.value(
                "coredns_grpc_responses_total", to=second.address, rcode="NOERROR"
            )
            assert answered == 2
            assert (
                metrics.value("coredns_grpc_request_duration_seconds_count", to=second.address) == 2
            )


async def test_the_query_gives_up_after_five_seconds_across_upstreams() -> None:
    with grpc_upstream() as slow, grpc_upstream(OTHER_HOST) as spare:
        corefile = (
            f". {{\n  grpc . {slow.address} {spare.address} {{\n    policy sequential\n  }}\n}}\n"
        )
        async with serve(corefile) as server:
            started = trio.current_time()
            reply = await query(server, "slow.", timeout=10)
            assert reply.rcode() == dns.rcode.SERVFAIL
            assert trio.current_time() - started >= 4.5
            assert spare.asked == []  # the deadline covers every upstream, not each


async def test_every_upstream_failing_is_servfail_and_fallthrough_passes_on() -> None:
    with grpc_upstream() as up:
        async with serve(f". {{\n  grpc . {up.address}\n}}\n") as server:
            assert (await query(server, "broken.")).rcode() == dns.rcode.SERVFAIL
        corefile = f". {{\n  grpc . {up.address} {{\n    fallthrough\n  }}\n  whoami\n}}\n"
        async with serve(corefile) as server:
            passed = await query(server, "broken.")
            assert passed.rcode() == dns.rcode.NOERROR and passed.additional  # whoami
            nx = await query(server, "nothing.example.org.")
            assert nx.rcode() == dns.rcode.NOERROR and nx.additional  # NXDOMAIN fell through


async def test_an_upstream_that_is_not_listening_is_skipped() -> None:
    with grpc_upstream() as up:
        corefile = f". {{\n  grpc . 127.0.0.23:9 {up.address} {{\n    policy sequential\n  }}\n}}\n"
        async with serve(corefile) as server:
            reply = await query(server, "www.example.org.", timeout=6)
            assert a_records(reply) == ["192.0.2.1"]


async def test_names_outside_from_or_excepted_go_to_the_next_plugin() -> None:
    with grpc_upstream() as up:
        corefile = (
            f". {{\n  grpc example.org {up.address} {{\n    except skip.example.org\n  }}\n"
            "  whoami\n}\n"
        )
        async with serve(corefile) as server:
            assert a_records(await query(server, "www.example.org.")) == ["192.0.2.1"]
            for name in ("a.skip.example.org.", "www.example.net."):
                reply = await query(server, name)
                assert reply.additional and not reply.answer  # whoami
            assert up.asked == ["www.example.org."]


async def test_a_reply_to_another_question_is_formerr() -> None:
    with grpc_upstream() as up:
        async with serve(f". {{\n  grpc . {up.address}\n}}\n") as server:
            assert (await query(server, "wrong.")).rcode() == dns.rcode.FORMERR


async def test_an_upstream_that_restarts_is_reconnected() -> None:
    with grpc_upstream() as up:
        async with serve(f". {{\n  grpc . {up.address}\n}}\n") as server:
            assert a_records(await query(server, "www.example.org.")) == ["192.0.2.1"]
            up.stop()
            assert (await query(server, "www.example.org.")).rcode() == dns.rcode.SERVFAIL
            up.start()  # same port
            with trio.fail_after(20):
                while True:
                    reply = await query(server, "www.example.org.")
                    if reply.rcode() == dns.rcode.NOERROR:
                        break
                    await trio.sleep(0.2)
            assert a_records(reply) == ["192.0.2.1"]


async def test_grpc_over_tls_verifies_the_server_name(tmp_path: Path) -> None:
    cert, key = make_certificate(tmp_path)
    credentials = grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())])
    with grpc_upstream("127.0.0.4", credentials=credentials) as up:
        corefile = (
            f". {{\n  grpc . {up.address} {{\n    tls {cert}\n    tls_servername dns.test\n"
            "  }\n}\n"
        )
        async with serve(corefile) as server:
            assert a_records(await query(server, "www.example.org.")) == ["192.0.2.1"]
        wrong_name = corefile.replace("dns.test", "other.test")
        async with serve(wrong_name) as server:
            assert (await query(server, "www.example.org.")).rcode() == dns.rcode.SERVFAIL


@pytest.mark.parametrize(
    ("line", "message", "column"),
    [
        ("grpc .", "Wrong argument count", 3),
        ("grpc . example.com", "not an IP address or file", 10),
        ("grpc . https://127.0.0.1", "not supported by grpc", 10),
        ("grpc . " + " ".join(f"127.0.0.{i}" for i in range(1, 17)), "more than 15 TOs", 3),
        ("grpc . 127.0.0.1 {\n    policy fastest\n  }", "unknown policy 'fastest'", 12),
        ("grpc . 127.0.0.1 {\n    nonsense\n  }", "unknown property 'nonsense'", 5),
        ("grpc . 127.0.0.1 {\n    tls /no/such/file\n  }", "no such file", 9),
    ],
)
def test_setup_errors(line: str, message: str, column: int) -> None:
    with pytest.raises(CorefileError) as caught:
        load_config(f". {{\n  {line}\n}}\n", "Corefile")
    text = str(caught.value)
    assert message in text, text
    where = text.split(" - ")[0]
    assert where.startswith("Corefile:") and where.endswith(f":{column}"), text


async def test_nxdomain_stands_with_fallthrough_but_no_plugin_after() -> None:
    with grpc_upstream() as up:
        corefile = f". {{\n  grpc . {up.address} {{\n    fallthrough\n  }}\n}}\n"
        async with serve(corefile) as server:
            reply = await query(server, "nothing.example.org.")
            assert reply.rcode() == dns.rcode.NXDOMAIN
