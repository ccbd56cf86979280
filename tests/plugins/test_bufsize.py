"""bufsize on the real server: the payload the chain (and the upstream) sees, the
block's UDP reply cap, on the chain and on the fast path, per server block."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import dns.message
import dns.rcode
import dns.rrset
import pytest

from pycorefile import CorefileError, Server, load_config
from pycorefile.testing import Upstream, make_query, query, query_wire, serve
from pycorefile_plugins.bufsize import BufsizePlugin

BIG_TXT = [f"{i:02d}" + "x" * 200 for i in range(15)]
"""About 3 KiB of TXT records: more than 1232 bytes, less than 4096."""


class PayloadRecorder:
    """An upstream handler that notes the EDNS payload of each query and answers BIG_TXT."""

    def __init__(self) -> None:
        self.payloads: list[int] = []

    def __call__(self, q: dns.message.Message) -> dns.message.Message:
        self.payloads.append(q.payload if q.opt is not None else 0)
        r = dns.message.make_response(q)
        r.answer.append(dns.rrset.from_text_list(q.question[0].name, 60, "IN", "TXT", BIG_TXT))
        return r


@asynccontextmanager
async def serving(blocks: str, recorder: PayloadRecorder) -> AsyncIterator[Server]:
    """Serve ``blocks`` with ``{up}`` the address of an upstream answering BIG_TXT."""
    up = Upstream(host="127.0.0.2", handler=recorder)
    async with up.running(), serve(blocks.replace("{up}", up.address)) as server:
        yield server


def block(body: str, zone: str = ".") -> str:
    return f"{zone}:0 {{\n bind 127.0.0.1\n {body}\n forward . {{up}}\n}}\n"


async def raw(server: Server, name: str, **options: object) -> bytes:
    """The reply's bytes to a UDP query."""
    q = make_query(name, "TXT", **options)  # type: ignore[arg-type]
    wire = await query_wire(server, q.to_wire())
    assert wire is not None
    return wire


def truncated(wire: bytes) -> bool:
    return bool(wire[2] & 0x02)


# -- Setup ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "size"), [("bufsize", 1232), ("bufsize 1220", 1220), ('bufsize "4096"', 4096)]
)
def test_sizes(line: str, size: int) -> None:
    config = load_config(f".:53 {{\n {line}\n whoami\n}}\n")
    (plugin,) = config.find("bufsize")
    assert isinstance(plugin, BufsizePlugin) and plugin.size == size
    assert config.blocks[0].udp_cap == size


@pytest.mark.parametrize(
    ("line", "where"),
    [
        ("bufsize 5000", "2:10"),
        ("bufsize 511", "2:10"),
        ("bufsize abc123", "2:10"),
        ("bufsize 512 512", "2:14"),
        ("bufsize -1", "2:10"),
    ],
)
def test_setup_errors(line: str, where: str) -> None:
    with pytest.raises(CorefileError) as info:
        load_config(f".:53 {{\n {line}\n whoami\n}}\n")
    message = str(info.value)
    assert f"Corefile:{where} - plugin/bufsize: " in message
    assert "Wrong argument count or unexpected line ending" in message


def test_once_per_block() -> None:
    with pytest.raises(CorefileError, match="Corefile:3:2 - plugin/bufsize: this plugin can only"):
        load_config(".:53 {\n bufsize\n bufsize 1100\n whoami\n}\n")


async def test_a_block_with_only_bufsize_has_a_chain_as_in_coredns() -> None:
    # CoreDNS links bufsize as a handler: its chain runs off its end (SERVFAIL),
    # where a block with no handler at all is REFUSED.
    async with serve(".:0 {\n bind 127.0.0.1\n bufsize\n}\n") as server:
        r = await query(server, "a.example", "A")
    assert r.rcode() == dns.rcode.SERVFAIL


# -- Serving ----------------------------------------------------------------------------------


async def test_the_upstream_sees_the_lowered_payload() -> None:
    recorder = PayloadRecorder()
    async with serving(block("bufsize 1100"), recorder) as server:
        await raw(server, "a.example", edns=True, payload=4096)  # lowered
        await raw(server, "b.example", edns=True, payload=900)  # smaller: kept
        await raw(server, "c.example")  # no EDNS: none added
    assert recorder.payloads == [1100, 900, 0]


async def test_without_bufsize_the_client_payload_goes_upstream_unchanged() -> None:
    recorder = PayloadRecorder()
    async with serving(block(""), recorder) as server:
        await raw(server, "a.example", edns=True, payload=4096)
    assert recorder.payloads == [4096]


@pytest.mark.parametrize(
    ("body", "payload", "limit", "whole"),
    [
        ("", 4096, 1232, False),  # pycorefile's own cap
        ("bufsize 4096", 4096, 4096, True),  # raised: the whole answer fits
        ("bufsize 4096", 2000, 2000, False),  # the client's own payload still holds
        ("bufsize 512", 4096, 512, False),
        ("bufsize 4096", 0, 512, False),  # no EDNS: 512 bytes, as always
    ],
)
async def test_udp_replies_are_capped_to_size_on_the_chain_and_the_fast_path(
    body: str, payload: int, limit: int, whole: bool
) -> None:
    recorder = PayloadRecorder()
    options: dict[str, object] = {"edns": True, "payload": payload} if payload else {}
    async with serving(block(f"{body}\n cache"), recorder) as server:
        assert server.config is not None and server.config.blocks[0].known_by == "cache"
        first = await raw(server, "big.example", **options)  # the chain (a miss)
        second = await raw(server, "big.example", **options)  # a cache hit, fast path
        asked = make_query("big.example", "TXT", **options)  # type: ignore[arg-type]
        by_tcp = await query(server, asked, proto="tcp")
    for wire in (first, second):
        assert len(wire) <= limit
        assert truncated(wire) != whole
        reply = dns.message.from_wire(wire)
        assert (reply.opt is not None) == bool(payload)  # never an OPT the client did not send
        if reply.opt is not None:
            assert reply.payload == 1232  # our own payload size (Differences from CoreDNS)
    assert len(recorder.payloads) == 1  # the second came from the cache
    assert sum(len(rrset) for rrset in by_tcp.answer) == len(BIG_TXT)  # TCP: not affected


async def test_each_server_block_has_its_own_cap() -> None:
    recorder = PayloadRecorder()
    blocks = block("bufsize 4096", "large.example") + block("", "small.example")
    async with serving(blocks, recorder) as server:
        large = await raw(server, "big.large.example", edns=True, payload=4096)
        small = await raw(server, "big.small.example", edns=True, payload=4096)
    assert not truncated(large) and len(large) > 1232
    assert truncated(small) and len(small) <= 1232
    assert recorder.payloads == [4096, 4096]
