"""The loop plugin on the real server: the probe through the whole chain, CoreDNS's
count, disarming, stopping the server on a loop; and forward's load-time check."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import dns.rcode
import pytest
import trio

from pycorefile import CorefileError, Server, load_config
from pycorefile._server import StartupError
from pycorefile.testing import Upstream, query, serve
from pycorefile_plugins.loop import LoopPlugin, parse_loop
from tests.udp_server import udp_server

RECORDS = {("a.example.", "A"): ["192.0.2.1"]}


def corefile(body: str, keys: str = ".:0") -> str:
    return f"{keys} {{\n bind 127.0.0.1\n {body}\n}}\n"


@asynccontextmanager
async def serving(template: str, *ups: Upstream, keys: str = ".:0") -> AsyncIterator[Server]:
    """Start the upstreams, then serve ``template`` with ``{0}``, ``{1}``... their addresses."""
    async with AsyncExitStack() as stack:
        for up in ups:
            await stack.enter_async_context(up.running())
        body = template.format(*(up.address for up in ups))
        async with serve(corefile(body, keys)) as server:
            yield server


def loop_plugin(server: Server) -> LoopPlugin:
    assert server.config is not None
    (plugin,) = server.config.find("loop")
    assert isinstance(plugin, LoopPlugin)
    return plugin


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait (bounded) until ``condition`` holds."""
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.02)


def hinfo_names(up: Upstream) -> list[str]:
    """The loop probes an upstream received."""
    return [name for name, t, _ in up.queries if t == "HINFO"]


class Relay:
    """A name server that passes every UDP query on to ``target`` and relays the reply.

    With our own server as the target it is the classic loop: an upstream
    (a node-local resolver, say) whose own upstream is us.
    """

    def __init__(self, host: str) -> None:
        self.host = host
        self.port = 0
        self.target: tuple[str, int] = ("127.0.0.1", 0)
        self.target_set = trio.Event()
        self.relayed = 0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Relay]:
        async with udp_server(self.host, self._relay) as port:
            self.port = port
            yield self

    async def _relay(
        self, sock: trio.socket.SocketType, data: bytes, addr: tuple[str, int]
    ) -> None:
        await self.target_set.wait()
        self.relayed += 1
        with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as out:
            await out.connect(self.target)
            await out.send(data)
            with trio.move_on_after(3):
                reply = await out.recv(65535)
                await sock.sendto(reply, addr)


# -- Setup --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        (".:53 {\n loop x\n forward . 10.0.0.1\n}\n", "2:7", "Wrong argument count"),
        (
            ".:53 {\n loop\n loop\n forward . 10.0.0.1\n}\n",
            "3:2",
            "this plugin can only be used once per Server Block",
        ),
    ],
)
def test_setup_errors(text: str, where: str, message: str) -> None:
    with pytest.raises(CorefileError) as info:
        load_config(text)
    assert f"Corefile:{where} - plugin/loop: {message}" in str(info.value)


def test_the_probe_is_for_the_first_zone_of_the_block() -> None:
    config = load_config("example.org:53 example.net:53 {\n loop\n forward . 10.0.0.1\n}\n")
    (plugin,) = config.find("loop")
    assert isinstance(plugin, LoopPlugin)
    name = plugin.probe.name
    assert name is not None and name.endswith(".example.org.")
    labels = name.split(".")
    assert all(label.isdigit() and int(label) < 2**62 for label in labels[:2])
    assert parse_loop(config.blocks[0].block.directives[0], ()) == "."


def test_it_sits_just_before_forward_and_costs_no_fast_path() -> None:
    config = load_config(".:53 {\n errors\n cache\n loop\n forward . 10.0.0.1\n}\n")
    block = config.blocks[0]
    assert [p.name for p in block.plugins] == ["errors", "cache", "loop", "forward"]
    assert block.known_by == "cache"


# -- Forwarding to our own address ------------------------------------------------------


def test_without_loop_forwarding_to_our_own_address_loads_as_in_coredns() -> None:
    # With loop in the block it is refused (tests/plugins/test_forward_parse.py).
    config = load_config(".:5353 {\n forward . 127.0.0.1:5353\n}\n")
    assert [p.name for p in config.blocks[0].plugins] == ["forward"]
    with pytest.raises(CorefileError, match="is this server's own address"):
        load_config(".:5353 {\n loop\n forward . 127.0.0.1:5353\n}\n")


# -- Serving --------------------------------------------------------------------------------


@pytest.mark.parametrize("before", ["", "errors\n cache\n log"])
async def test_a_forwarding_loop_is_detected_and_stops_the_server(
    caplog: pytest.LogCaptureFixture, before: str
) -> None:
    # The probe goes through the whole chain (a cache, a log on the way) to forward.
    caplog.set_level(logging.INFO, logger="pycorefile")
    relay = Relay("127.0.0.5")
    with pytest.RaisesGroup(
        pytest.RaisesExc(StartupError, match=r'plugin/loop: Loop \(.*\) detected for zone "\."'),
        flatten_subgroups=True,
    ):
        async with (
            relay.running(),
            serve(corefile(f"{before}\n loop\n forward . {relay.address}")) as server,
        ):
            relay.target = ("127.0.0.1", server.port())
            relay.target_set.set()
            with trio.fail_after(10):
                await trio.sleep_forever()  # ended by the server stopping on the loop
    logged = [r.getMessage() for r in caplog.records if "Loop (" in r.getMessage()]
    assert logged, [r.getMessage() for r in caplog.records]
    assert logged[0].startswith("plugin/loop: Loop (127.0.0.1:")
    assert f"-> 127.0.0.1:{relay.target[1]}) detected" in logged[0]
    assert 'see https://coredns.io/plugins/loop#troubleshooting. Query: "HINFO ' in logged[0]
    assert relay.relayed <= 4  # the probe went round twice, then the loop was cut


async def test_no_loop_with_a_normal_upstream() -> None:
    up = Upstream(records=dict(RECORDS), host="127.0.0.2")
    async with serving("loop\n forward . {0}", up, keys="example.org:0 .:0") as server:
        plugin = loop_plugin(server)
        await until(lambda: not plugin.probe.armed)
        r = await query(server, "a.example", "A")
        assert plugin.loop_error is None
        port = server.port()
    assert r.rcode() == dns.rcode.NOERROR
    hinfo = hinfo_names(up)
    assert hinfo == [plugin.probe.name]  # one probe, sent once, through our own forward
    assert hinfo[0].endswith(".example.org.")  # the block's first zone
    assert plugin.target == f"127.0.0.1:{port}"


async def test_a_block_without_forward_answers_the_probe_and_disarms_it() -> None:
    async with serve(corefile("loop\n whoami")) as server:
        plugin = loop_plugin(server)
        await until(lambda: not plugin.probe.armed)
        assert plugin.loop_error is None
        assert plugin.probe.sightings == 1


async def replay(server: Server, name: str, times: int = 4) -> list[int]:
    """Ask for the probe name again, as an attacker who saw it would."""
    return [(await query(server, name, "HINFO")).rcode() for _ in range(times)]


async def test_a_probe_replayed_after_its_reply_does_not_stop_the_server() -> None:
    # CoreDNS's loop plugin disarms once its probe is answered: a name seen
    # in an upstream's logs is no kill switch.
    up = Upstream(records=dict(RECORDS), host="127.0.0.2")
    async with serving("loop\n forward . {0}", up) as server:
        plugin = loop_plugin(server)
        await until(lambda: not plugin.probe.armed)
        [name] = hinfo_names(up)
        rcodes = await replay(server, name)
        await trio.sleep(0.2)  # a stop would come from the plugin's task
        r = await query(server, "a.example", "A")
        assert plugin.loop_error is None
    assert rcodes == [dns.rcode.NXDOMAIN] * 4  # forwarded like any other name
    assert hinfo_names(up).count(name) == 5
    assert r.rcode() == dns.rcode.NOERROR


async def test_an_unanswered_probe_is_sent_again_then_disarmed_after_the_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # CoreDNS tries its probe every second for 30 s (here: 1.5 s), each try
    # waiting 2 s for our own reply (here 0.2 s, less than forward's 0.5 s),
    # then disarms it: replaying the name later does not stop the server either.
    monkeypatch.setattr("pycorefile_plugins.loop._probe.WINDOW", 1.5)
    monkeypatch.setattr("pycorefile_plugins.loop._probe.RETRY", 0.2)
    monkeypatch.setattr("pycorefile_plugins.loop._probe.EXCHANGE_TIMEOUT", 0.2)
    silent = Upstream(host="127.0.0.2", mode="silent")
    good = Upstream(records=dict(RECORDS), host="127.0.0.3")
    body = (
        "loop\n forward . {0} {{\n read_timeout 500ms\n max_connect_attempts 1\n"
        " max_fails 0\n}}\n forward example {1}"
    )
    async with serving(body, silent, good) as server:
        plugin = loop_plugin(server)
        await until(lambda: bool(hinfo_names(silent)))
        name = plugin.probe.name
        assert name is not None and plugin.probe.armed
        await until(lambda: not plugin.probe.armed)
        sent = hinfo_names(silent).count(name)
        rcodes = await replay(server, name)  # goes to the silent upstream: SERVFAIL
        await trio.sleep(0.2)
        r = await query(server, "a.example", "A")
        assert plugin.loop_error is None
    assert 2 <= sent <= 8, sent  # sent again after each unanswered try, within 1.5 s
    assert rcodes == [dns.rcode.SERVFAIL] * 4
    assert r.rcode() == dns.rcode.NOERROR
