"""timeouts: CoreDNS's syntax and checks, and the real server's TCP connections obeying it."""

from __future__ import annotations

import struct
import tomllib
from pathlib import Path

import dns.message
import pytest
import trio

from pycorefile import CorefileError, load_config, open_server
from pycorefile._registry import ORDER, Registry
from pycorefile._tcp import TcpLimits
from pycorefile.corefile import parse_corefile
from pycorefile.plugin import TcpTimeouts
from pycorefile.testing import make_query
from pycorefile_plugins.bind import BindPlugin
from pycorefile_plugins.timeouts import TimeoutsPlugin, parse_timeouts
from pycorefile_plugins.whoami import WhoamiPlugin

ROOT = Path(__file__).resolve().parents[2]


def registry() -> Registry:
    return Registry.from_classes(
        {"timeouts": TimeoutsPlugin, "whoami": WhoamiPlugin, "bind": BindPlugin}
    )


def parse(text: str) -> TcpTimeouts:
    return parse_timeouts(parse_corefile(".:53 {\n" + text + "\n}\n")[0].directives)


# -- Parsing (CoreDNS's own cases) --------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("timeouts {\n read 30s\n}", TcpTimeouts(read=30.0)),
        ("timeouts {\n read 1m\n write 2m\n}", TcpTimeouts(read=60.0, write=120.0)),
        ("timeouts {\n idle 1h\n}", TcpTimeouts(idle=3600.0)),
        ("timeouts {\n read 10\n write 20\n idle 60\n}", TcpTimeouts(10.0, 20.0, 60.0)),
        ("timeouts {\n maxtcpqueries 128\n}", TcpTimeouts(max_queries=128)),
        ("timeouts {\n maxtcpqueries -1\n}", TcpTimeouts(max_queries=-1)),
        ("timeouts {\n read 10s\n maxtcpqueries 128\n}", TcpTimeouts(read=10.0, max_queries=128)),
        # Repeated: a later setting wins.
        ("timeouts {\n read 5s\n}\ntimeouts {\n read 7s\n}", TcpTimeouts(read=7.0)),
    ],
)
def test_parse(text: str, expected: TcpTimeouts) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("timeouts", "timeouts block with no timeouts specified"),
        ("timeouts {\n}", "timeouts block with no timeouts specified"),
        ("timeouts 5s {\n read 5s\n}", "Wrong argument count"),
        ("timeouts {\n read 10s\n giraffe 30s\n}", "unknown option: 'giraffe'"),
        ("timeouts {\n read 10s 20s\n write 30s\n}", "Wrong argument count"),
        ("timeouts {\n write snake\n}", "invalid duration 'snake'"),
        ("timeouts {\n idle 0s\n}", "needs to be between 1 second and 24 hours"),
        ("timeouts {\n read 48h\n}", "needs to be between 1 second and 24 hours"),
        ("timeouts {\n maxtcpqueries 0\n}", "needs to be -1 (unlimited) or a positive integer"),
        ("timeouts {\n maxtcpqueries -2\n}", "needs to be -1 (unlimited) or a positive integer"),
        ("timeouts {\n maxtcpqueries snake\n}", "invalid value for maxtcpqueries 'snake'"),
    ],
)
def test_setup_errors(text: str, message: str) -> None:
    with pytest.raises(CorefileError, match="plugin/timeouts: ") as caught:
        load_config(".:53 {\n" + text + "\n    whoami\n}\n", registry=registry())
    assert message in str(caught.value)


def test_registered_as_a_setup_only_plugin_in_coredns_order() -> None:
    with open(ROOT / "pyproject.toml", "rb") as f:
        entry_points = tomllib.load(f)["project"]["entry-points"]["pycorefile.plugins"]
    assert entry_points["timeouts"] == "pycorefile_plugins.timeouts:TimeoutsPlugin"
    assert TimeoutsPlugin.serves_queries is False
    # plugin.cfg: right after metadata, before reload and bind.
    assert ORDER.index("metadata") < ORDER.index("timeouts") < ORDER.index("reload")


def test_later_block_on_a_listener_wins_and_defaults_stay() -> None:
    limits = TcpLimits().with_timeouts(TcpTimeouts(read=5.0, idle=60.0), TcpTimeouts(read=7.0))
    assert limits == TcpLimits(read=7.0, idle=60.0)


# -- The real server ----------------------------------------------------------------------


def frame(name: str, qid: int) -> bytes:
    q = make_query(name, "A")
    q.id = qid
    wire = q.to_wire()
    return struct.pack(">H", len(wire)) + wire


async def replies_until_closed(stream: trio.SocketStream, timeout: float) -> list[int]:
    """IDs of the replies read until the server closes the connection."""
    ids: list[int] = []
    buf = b""
    with trio.fail_after(timeout):
        while chunk := await stream.receive_some(65535):
            buf += chunk
            while len(buf) >= 2 and len(buf) >= 2 + struct.unpack(">H", buf[:2])[0]:
                size = struct.unpack(">H", buf[:2])[0]
                ids.append(dns.message.from_wire(buf[2 : 2 + size]).id)
                buf = buf[2 + size :]
    return ids


async def test_maxtcpqueries_closes_the_connection_after_that_many() -> None:
    corefile = (
        ".:0 {\n    bind 127.0.0.1\n    timeouts {\n        maxtcpqueries 2\n    }\n    whoami\n}\n"
    )
    async with open_server(corefile, registry=registry()) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port())
        async with stream:
            await stream.send_all(b"".join(frame("example.org", i) for i in (1, 2, 3)))
            assert sorted(await replies_until_closed(stream, 10)) == [1, 2]


async def test_idle_and_read_timeouts_apply_to_their_listener_only() -> None:
    corefile = (
        "a.test:0 {\n    bind 127.0.0.1\n    timeouts {\n        idle 1s\n        read 1s\n    }\n"
        "    whoami\n}\n"
        "b.test:0 {\n    bind 127.0.0.2\n    whoami\n}\n"
    )
    async with open_server(corefile, registry=registry()) as server:
        by_host = {key[1]: lst for key, lst in server.listeners.items()}
        assert by_host["127.0.0.1"].tcp_limits == TcpLimits(read=1.0, idle=1.0)
        assert by_host["127.0.0.2"].tcp_limits == TcpLimits()
        port = by_host["127.0.0.1"].addresses[0][2]
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:  # one query answered, then the idle timeout closes it
            await stream.send_all(frame("www.a.test", 9))
            assert await replies_until_closed(stream, 8) == [9]  # the default idle is 10 s
