"""loadbalance's weighted policy: the weight file (CoreDNS's format and errors, reload
on change), the first address picked by weight, on the chain and on cache hits."""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import dns.message
import dns.rrset
import pytest
import trio

from pycorefile import CorefileError, Server, load_config
from pycorefile.testing import Upstream, query, serve
from pycorefile_plugins.loadbalance import LoadbalancePlugin
from pycorefile_plugins.loadbalance._weights import (
    WeightFileError,
    Weights,
    parse_weights,
    weighted_order,
)

A, CNAME, MX, TXT = 1, 5, 15, 16
ADDRESSES = ["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"]
QUERIES = 100
AT_LEAST = 85
"""One address weighs 255, three weigh 1: it comes first with probability 255/258
(about 99 in 100); fewer than 85 in 100 has a probability below 1e-9."""


class Listed:
    """Records for ``weighted_order``: owners and addresses given as text."""

    def __init__(self, records: list[tuple[str, str]]) -> None:
        self.records = records

    def rdata(self, index: int) -> bytes:
        value = self.records[index][1]
        try:
            return ipaddress.ip_address(value).packed
        except ValueError:
            return b""

    def owner(self, index: int) -> str:
        return self.records[index][0]


# -- The weight file --------------------------------------------------------------------------


def test_parse_weights() -> None:
    text = """\
# comment lines are ignored

www.example.com
100.64.1.1 3
100.64.1.2 1
  # indented comment
other.example.
2001:db8::1 255
"""
    weights = parse_weights(text, "w.txt")
    assert weights.domains == {
        "www.example.com.": [
            (ipaddress.ip_address("100.64.1.1"), 3),
            (ipaddress.ip_address("100.64.1.2"), 1),
        ],
        "other.example.": [(ipaddress.ip_address("2001:db8::1"), 255)],
    }
    assert weights.weight("www.example.com.", ipaddress.ip_address("100.64.1.1")) == 3
    assert weights.weight("www.example.com.", ipaddress.ip_address("100.64.1.9")) == 1
    assert weights.weight("WWW.example.com.", ipaddress.ip_address("100.64.1.1")) == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("100.64.1.1\n", 'wrong domain name:"100.64.1.1" in weight file w.txt. (Maybe a missing'),
        ("www.example.com\nnot-ip 3\n", 'wrong IP address:"not-ip" in weight file w.txt'),
        ("www.example.com\n100.64.1.1 0\n", 'wrong weight value:"0" in weight file w.txt'),
        ("www.example.com\n100.64.1.1 256\n", 'wrong weight value:"256" in weight file w.txt'),
        ("www.example.com\n100.64.1.1 x\n", 'wrong weight value:"x" in weight file w.txt'),
        ("100.64.1.1 3\n", "missing domain name in weight file w.txt"),
        ("www.example.com\n100.64.1.1 3 4\n", 'could not parse weight line:"100.64.1.1 3 4"'),
    ],
)
def test_weight_file_errors(text: str, message: str) -> None:
    with pytest.raises(WeightFileError) as info:
        parse_weights(text, "w.txt")
    assert str(info.value).startswith(message)


# -- The order --------------------------------------------------------------------------------


def drawing(value: int) -> Callable[[int], int]:
    return lambda total: value


WEIGHTS = parse_weights("www.example.\n192.0.2.1 3\n192.0.2.2 1\n192.0.2.3 2\n", "w")
RECORDS = [("www.example.", a) for a in ADDRESSES[:3]]


@pytest.mark.parametrize(
    ("value", "first"),
    [(0, 0), (2, 0), (3, 2), (4, 2), (5, 1)],  # heaviest first: 3 (.1), 2 (.3), 1 (.2)
)
def test_the_first_address_is_drawn_by_weight(value: int, first: int) -> None:
    order = weighted_order([A, A, A], Listed(RECORDS), WEIGHTS, drawing(value))
    expected = [0, 1, 2]
    expected[0], expected[first] = expected[first], expected[0]  # swapped, the rest kept
    assert order == expected


def test_the_picked_address_swaps_with_the_first_and_cnames_lead() -> None:
    records = [
        ("www.example.", "192.0.2.1"),
        ("x.example.", "mail.example."),
        ("www.example.", "192.0.2.2"),
        ("www.example.", "target.example."),
        ("www.example.", "192.0.2.3"),
    ]
    order = weighted_order([A, MX, A, CNAME, A], Listed(records), WEIGHTS, drawing(3))
    # CNAME, (no other types), addresses with the drawn .3 swapped into first place, MX.
    assert order == [3, 4, 2, 0, 1]


def test_without_addresses_nothing_moves() -> None:
    records = [("www.example.", "t"), ("www.example.", "a.example.")]
    assert weighted_order([TXT, CNAME], Listed(records), Weights(), drawing(0)) == [0, 1]


# -- Setup ------------------------------------------------------------------------------------


def test_a_bad_weight_file_is_refused_at_its_argument(tmp_path: Path) -> None:
    bad = tmp_path / "weights"
    bad.write_text("www.example.\nnot-ip 3\n")
    with pytest.raises(CorefileError) as info:
        load_config(f".:53 {{\n loadbalance weighted {bad}\n whoami\n}}\n")
    assert str(info.value).startswith(
        f'Corefile:2:23 - plugin/loadbalance: wrong IP address:"not-ip" in weight file {bad}'
    )


def test_a_missing_weight_file_is_an_error_only_without_reload(tmp_path: Path) -> None:
    missing = tmp_path / "nothing"
    config = load_config(f".:53 {{\n loadbalance weighted {missing}\n whoami\n}}\n")
    (plugin,) = config.find("loadbalance")
    assert isinstance(plugin, LoadbalancePlugin) and plugin.weights.domains == {}
    with pytest.raises(CorefileError, match="Corefile:2:23 - plugin/loadbalance: weight file open"):
        load_config(f".:53 {{\n loadbalance weighted {missing} {{\n reload 0\n }}\n whoami\n}}\n")


# -- Served -----------------------------------------------------------------------------------


def in_given_order(q: dns.message.Message) -> bytes:
    r = dns.message.make_response(q)
    r.answer.append(dns.rrset.from_text_list(q.question[0].name, 300, "IN", "A", ADDRESSES))
    wire: bytes = r.to_wire(want_shuffle=False)
    return wire


@asynccontextmanager
async def serving(weights: Path, options: str = "") -> AsyncIterator[Server]:
    up = Upstream(host="127.0.0.2", handler=in_given_order)
    async with up.running():
        text = (
            f".:0 {{\n bind 127.0.0.1\n loadbalance weighted {weights} {{\n {options}\n }}\n"
            f" cache\n forward . {up.address}\n}}\n"
        )
        async with serve(text) as server:
            yield server


def replace_file(path: Path, text: str) -> None:
    """Write ``path`` as configuration tools do: a new file renamed over the old one, so a
    reload never reads it half written (an empty file is a valid, empty weight file)."""
    new = path.with_name(path.name + ".new")
    new.write_text(text)
    new.replace(path)


async def firsts(server: Server, times: int = QUERIES) -> Counter[str]:
    found: Counter[str] = Counter()
    for _ in range(times):
        reply = await query(server, "www.example.", "A")
        found[str(reply.answer[0][0])] += 1
    return found


async def test_the_heavy_address_comes_first_also_on_cache_hits(tmp_path: Path) -> None:
    weights = tmp_path / "weights"
    weights.write_text("www.example\n192.0.2.3 255\n")
    async with serving(weights) as server:
        assert server.config is not None and server.config.blocks[0].known_by == "cache"
        found = await firsts(server)
    assert found["192.0.2.3"] >= AT_LEAST, found


async def test_a_changed_weight_file_is_reloaded_and_a_broken_one_ignored(
    tmp_path: Path,
) -> None:
    weights = tmp_path / "weights"
    weights.write_text("www.example.\n192.0.2.1 255\n")
    async with serving(weights, "reload 100ms") as server:
        assert server.config is not None
        (plugin,) = server.config.find("loadbalance")
        assert isinstance(plugin, LoadbalancePlugin)
        before = await firsts(server)
        replace_file(weights, "www.example.\n192.0.2.4 255\n")
        with trio.fail_after(10):
            while plugin.weights.weight("www.example.", ipaddress.ip_address("192.0.2.4")) == 1:
                await trio.sleep(0.05)
        after = await firsts(server)
        digest = plugin.digest
        replace_file(weights, "www.example.\nbroken 1\n")
        with trio.fail_after(10):
            while plugin.digest == digest:
                await trio.sleep(0.05)
        kept = await firsts(server, 20)
    assert before["192.0.2.1"] >= AT_LEAST, before
    assert after["192.0.2.4"] >= AT_LEAST, after
    assert plugin.weights.weight("www.example.", ipaddress.ip_address("192.0.2.4")) == 255
    assert kept["192.0.2.4"] >= 10, kept  # the broken file left the weights as they were
