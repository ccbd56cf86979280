"""health and ready: parsing, the endpoints over real HTTP, readiness, lameduck."""

from __future__ import annotations

import socket
from collections.abc import Sequence

import dns.rcode
import pytest
import trio

from pycorefile import (
    CorefileError,
    Directive,
    Plugin,
    Server,
    SetupContext,
    load_config,
    open_server,
)
from pycorefile._registry import Registry
from pycorefile.corefile import parse_corefile
from pycorefile.testing import query
from pycorefile_plugins.bind import BindPlugin
from pycorefile_plugins.health import HealthConfig, HealthPlugin, parse_health
from pycorefile_plugins.ready import ReadyConfig, ReadyPlugin, parse_ready
from pycorefile_plugins.whoami import WhoamiPlugin


class GatePlugin(Plugin):
    """Not ready until a test opens it (``gate`` and ``latch``, two names to list)."""

    serves_queries = False

    def __init__(self) -> None:
        self.open = False

    @classmethod
    def setup(cls, directives: Sequence[Directive], ctx: SetupContext) -> GatePlugin:
        return cls()

    def ready(self) -> bool:
        return self.open


class LatchPlugin(GatePlugin):
    pass


def registry() -> Registry:
    return Registry.from_classes(
        {
            "bind": BindPlugin,
            "health": HealthPlugin,
            "ready": ReadyPlugin,
            "whoami": WhoamiPlugin,
            "gate": GatePlugin,
            "latch": LatchPlugin,
        }
    )


async def http_get(address: tuple[str, int], path: str, method: str = "GET") -> tuple[int, bytes]:
    """One HTTP/1.1 request on a fresh connection: status and body."""
    with trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        await sock.connect(address)
        await sock.send(
            f"{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode()
        )
        data = b""
        with trio.fail_after(5):
            while chunk := await sock.recv(65536):
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def directives(text: str) -> tuple[Directive, ...]:
    return parse_corefile(".:53 {\n" + text + "\n}\n")[0].directives


def gate(server: Server, name: str = "gate") -> GatePlugin:
    assert server.config is not None
    plugin = server.config.find(name)[0]
    assert isinstance(plugin, GatePlugin)
    return plugin


# -- Parsing ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("health", HealthConfig(":8080", 0.0)),
        ("health 127.0.0.1:18080", HealthConfig("127.0.0.1:18080", 0.0)),
        ("health :8080 {\n  lameduck 5s\n}", HealthConfig(":8080", 5.0)),
        ("health {\n  lameduck 1m30s\n}", HealthConfig(":8080", 90.0)),
    ],
)
def test_parse_health(text: str, expected: HealthConfig) -> None:
    assert parse_health(directives(text)) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ready", ReadyConfig(":8181", "until-ready")),
        ("ready localhost:8282", ReadyConfig("localhost:8282", "until-ready")),
        ("ready {\n  monitor continuously\n}", ReadyConfig(":8181", "continuously")),
        ("ready {\n  monitor until-ready\n}", ReadyConfig(":8181", "until-ready")),
    ],
)
def test_parse_ready(text: str, expected: ReadyConfig) -> None:
    assert parse_ready(directives(text)) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("health localhost", "plugin/health: address localhost: missing port in address"),
        ("health :8080 :8081", "plugin/health: Wrong argument count"),
        ("health {\n  lameduck\n}", "plugin/health: Wrong argument count"),
        ("health {\n  lameduck soon\n}", "plugin/health: invalid duration 'soon'"),
        ("health {\n  lameduck 5s 6s\n}", "plugin/health: Wrong argument count"),
        ("health {\n  lame 5s\n}", "plugin/health: unknown property 'lame'"),
        ("ready :x", "plugin/ready: invalid port"),
        ("ready {\n  monitor sometimes\n}", "plugin/ready: monitor must be"),
        ("ready {\n  watch\n}", "plugin/ready: unknown property 'watch'"),
    ],
)
def test_setup_errors(text: str, message: str) -> None:
    with pytest.raises(CorefileError, match=message):
        load_config(".:53 {\n" + text + "\n}\n", registry=registry())


# -- Endpoints --------------------------------------------------------------------------


async def test_health_answers_ok() -> None:
    text = ".:0 {\n bind 127.0.0.1\n health 127.0.0.1:0\n whoami\n}\n"
    async with open_server(text, registry=registry()) as server:
        address = server.http_address("127.0.0.1", 0)
        assert await http_get(address, "/health") == (200, b"OK")
        assert await http_get(address, "/health", "HEAD") == (200, b"")
        assert (await http_get(address, "/ready"))[0] == 404


async def test_ready_waits_for_every_plugin() -> None:
    text = ".:0 {\n bind 127.0.0.1\n ready 127.0.0.1:0\n health 127.0.0.1:0\n latch\n gate\n}\n"
    async with open_server(text, registry=registry()) as server:
        address = server.http_address("127.0.0.1", 0)
        assert await http_get(address, "/ready") == (503, b"gate,latch")
        assert await http_get(address, "/health") == (200, b"OK")
        gate(server).open = True
        assert await http_get(address, "/ready") == (503, b"latch")
        gate(server, "latch").open = True
        assert await http_get(address, "/ready") == (200, b"OK")
        # until-ready (the default): once ready, a plugin is not asked again.
        gate(server).open = False
        assert await http_get(address, "/ready") == (200, b"OK")


async def test_ready_monitor_continuously() -> None:
    text = ".:0 {\n bind 127.0.0.1\n ready 127.0.0.1:0 {\n  monitor continuously\n }\n gate\n}\n"
    async with open_server(text, registry=registry()) as server:
        address = server.http_address("127.0.0.1", 0)
        gate(server).open = True
        assert await http_get(address, "/ready") == (200, b"OK")
        gate(server).open = False
        assert await http_get(address, "/ready") == (503, b"gate")


async def test_ready_covers_the_blocks_that_use_it() -> None:
    text = (
        "a.test:0 {\n bind 127.0.0.1\n ready 127.0.0.1:0\n whoami\n}\n"
        "b.test:0 {\n bind 127.0.0.1\n ready 127.0.0.1:0\n latch\n}\n"
        "c.test:0 {\n bind 127.0.0.1\n gate\n}\n"
    )
    async with open_server(text, registry=registry()) as server:
        address = server.http_address("127.0.0.1", 0)
        # gate is in a block without ready: it is not waited for, as in CoreDNS.
        assert await http_get(address, "/ready") == (503, b"latch")
        gate(server, "latch").open = True
        assert await http_get(address, "/ready") == (200, b"OK")


async def test_lameduck_keeps_serving_then_stops() -> None:
    text = (
        ".:0 {\n bind 127.0.0.1\n health 127.0.0.1:0 {\n  lameduck 600ms\n }\n"
        " ready 127.0.0.1:0\n whoami\n}\n"
    )
    config = load_config(text, registry=registry())
    server = Server()
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve, config)
        address = server.http_address("127.0.0.1", 0)
        assert await http_get(address, "/ready") == (200, b"OK")
        asked_to_stop = trio.current_time()
        server.stop()
        with trio.fail_after(5):
            while (await http_get(address, "/ready"))[1] != b"Shutting down":
                await trio.sleep(0.01)
        # In lameduck: not ready, but alive and still answering DNS.
        assert await http_get(address, "/ready") == (503, b"Shutting down")
        assert await http_get(address, "/health") == (200, b"OK")
        for proto in ("udp", "tcp"):
            reply = await query(server, "example.org.", "A", proto=proto)
            assert reply.rcode() == dns.rcode.NOERROR
    assert trio.current_time() - asked_to_stop >= 0.6
